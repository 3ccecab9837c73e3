"""What every resolver of a request sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response

from datasources.instrumentation import RoundTrips
from gateway.auth import ANONYMOUS, Viewer
from gateway.connections import Connections
from gateway.loaders import Loaders
from gateway.settings import Settings


@dataclass
class Context:
    request: HTTPConnection
    response: Response | None
    settings: Settings
    connections: Connections
    loaders: Loaders
    round_trips: RoundTrips
    # Whether the response's extensions carry the round trips per store.
    report_round_trips: bool
    viewer: Viewer = ANONYMOUS
    # A WebSocket's connection_init payload (where its credentials are).
    connection_params: dict[str, Any] = field(default_factory=dict)
