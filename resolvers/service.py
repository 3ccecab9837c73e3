"""What is answering: the service's name, version and environment."""

from __future__ import annotations

import strawberry

from core import SERVICE_NAME, __version__
from core.context import Context


@strawberry.type(description="The gateway that answers this request.")
class Service:
    name: str
    version: str
    environment: str


@strawberry.type
class ServiceQuery:
    @strawberry.field(description="The gateway's name, version and environment.")
    def service(self, info: strawberry.Info[Context, None]) -> Service:
        return Service(
            name=SERVICE_NAME,
            version=__version__,
            environment=info.context.settings.environment.value,
        )
