"""What every resolver of a request sees."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response

from gateway.connections import Connections
from gateway.settings import Settings


@dataclass
class Context:
    request: HTTPConnection
    response: Response | None
    settings: Settings
    connections: Connections
