"""The ASGI application: GraphQL over HTTP and WebSocket, health probes, and the lifespan
that owns the stores' clients."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from gateway.context import Context
from gateway.health import healthz, readyz
from gateway.runtime import running_stores
from gateway.schema import build_schema
from gateway.settings import Settings

logger = logging.getLogger(__name__)
GRAPHQL_PATH = "/graphql"


class GraphQLEndpoint(GraphQL[Context, None]):
    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | None
    ) -> Context:
        return Context(
            request=request,
            response=response if isinstance(response, Response) else None,
            settings=request.app.state.settings,
            connections=request.app.state.connections,
        )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running_stores(
            settings, apply_migrations=settings.is_development
        ) as connections:
            app.state.connections = connections
            logger.info("GraphiQL at http://%s:%d%s", settings.host, settings.port, GRAPHQL_PATH)
            yield

    endpoint = GraphQLEndpoint(
        build_schema(),
        graphql_ide="graphiql",
        allow_queries_via_get=True,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
    )
    app = Starlette(
        routes=[
            Route(GRAPHQL_PATH, endpoint, methods=["GET", "POST"]),
            WebSocketRoute(GRAPHQL_PATH, endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
