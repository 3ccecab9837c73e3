"""The ASGI application: GraphQL over HTTP and WebSocket, health probes, CORS, and the
lifespan that owns the stores' clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from gateway.auth import ANONYMOUS, AuthenticationError, Authenticator
from gateway.context import Context
from gateway.cors import JSONErrorCORSMiddleware, OriginPolicy
from gateway.health import healthz, readyz
from gateway.http import GraphQLOverHTTP, error_response
from gateway.limits import Limits
from gateway.runtime import reconcile_stores, refresh_counter_snapshots, running_stores
from gateway.schema import GatewaySchema, build_schema
from gateway.settings import Settings

logger = logging.getLogger(__name__)
GRAPHQL_PATH = "/graphql"


class GraphQLOverWebSocket(GraphQL[Context, None]):
    """``/graphql`` over WebSocket (graphql-transport-ws and the older graphql-ws); HTTP
    requests to the path are served by ``GraphQLOverHTTP``."""

    def __init__(self, schema: GatewaySchema, origins: OriginPolicy) -> None:
        super().__init__(
            schema,
            graphql_ide=None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        )
        self._origins = origins

    def is_websocket_origin_allowed(self, request: WebSocket, origin: str) -> bool:
        # A page of another site may not act over a socket with the user's cookies.
        return self._origins.allows(origin)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | None
    ) -> Context:
        return Context.of(request, response if isinstance(response, Response) else None, ANONYMOUS)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """A WebSocket authenticates once, with the Authorization of its connection_init."""
        params = context.connection_params
        authorization = params.get("Authorization") or params.get("authorization")
        authenticator: Authenticator = context.request.app.state.authenticator
        try:
            context.viewer = await authenticator.viewer(
                authorization if isinstance(authorization, str) else None
            )
        except AuthenticationError as error:
            raise ConnectionRejectionError(
                {"code": "UNAUTHENTICATED", "message": str(error)}
            ) from error
        # UNSET: acknowledge with no payload.
        return cast("UnsetType", UNSET)


class GraphQLPath:
    """One path, two transports: WebSocket upgrades go to Strawberry's protocols, HTTP
    requests to the GraphQL-over-HTTP endpoint."""

    def __init__(self, http: ASGIApp, websocket: ASGIApp) -> None:
        self._http = http
        self._websocket = websocket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._websocket if scope["type"] == "websocket" else self._http
        await endpoint(scope, receive, send)


async def _http_error(request: Request, error: Exception) -> Response:
    """Unknown paths, wrong methods and anything unexpected answer in JSON too."""
    if isinstance(error, HTTPException):
        return error_response(error.status_code, error.detail, request.headers)
    logger.error("unexpected error serving %s", request.url.path, exc_info=error)
    return error_response(500, "Internal server error", request.headers)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running_stores(
            settings, apply_migrations=settings.is_development
        ) as connections:
            app.state.connections = connections
            app.state.authenticator = Authenticator(settings, connections.engine)
            # Background work stops at a signal and finishes its current store call;
            # it is never cancelled half-way through one (see runtime.py).
            stop = asyncio.Event()
            interval = settings.counter_snapshot_interval
            background = [
                # Settle what a process that died mid-write left, without delaying start-up.
                asyncio.create_task(reconcile_stores(connections, stop)),
                *(
                    [asyncio.create_task(refresh_counter_snapshots(connections, interval, stop))]
                    if interval
                    else []
                ),
            ]
            logger.info("GraphiQL at http://%s:%d%s", settings.host, settings.port, GRAPHQL_PATH)
            try:
                yield
            finally:
                stop.set()
                await asyncio.gather(*background)

    schema = build_schema(Limits.from_settings(settings))
    origins = OriginPolicy(settings)
    graphql = GraphQLPath(GraphQLOverHTTP(schema, settings), GraphQLOverWebSocket(schema, origins))
    app = Starlette(
        routes=[
            # Every method reaches the endpoint, which answers the ones it refuses in JSON.
            Route(GRAPHQL_PATH, graphql, methods=None),
            WebSocketRoute(GRAPHQL_PATH, graphql),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
        ],
        middleware=[Middleware(JSONErrorCORSMiddleware, policy=origins)],
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
