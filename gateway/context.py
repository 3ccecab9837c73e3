"""What every resolver of a request sees."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response

from datasources.instrumentation import RoundTrips
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
