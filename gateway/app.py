"""The ASGI application: GraphQL over HTTP and WebSocket, health probes, and the lifespan
that owns the stores' clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from datasources.instrumentation import RoundTrips, current_round_trips
from gateway.auth import ANONYMOUS, AuthenticationError, Authenticator
from gateway.connections import Connections
from gateway.context import Context
from gateway.health import healthz, readyz
from gateway.loaders import Loaders
from gateway.runtime import reconcile_stores, refresh_counter_snapshots, running_stores
from gateway.schema import build_schema
from gateway.settings import Settings

logger = logging.getLogger(__name__)
GRAPHQL_PATH = "/graphql"
# Ask for the round trips per store in the response's extensions (always on in development).
ROUND_TRIPS_HEADER = "x-gateway-round-trips"
# "naive": one store call per lookup, for benchmarks; honoured only when the settings allow.
LOOKUPS_HEADER = "x-gateway-lookups"


class GraphQLEndpoint(GraphQL[Context, None]):
    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | None
    ) -> Context:
        settings: Settings = request.app.state.settings
        connections: Connections = request.app.state.connections
        headers = request.headers
        round_trips = RoundTrips()
        # Bound here, in the request's task: every store call made for this request,
        # including DataLoader batches, counts towards it.
        current_round_trips.set(round_trips)
        naive = settings.allow_naive_lookups and headers.get(LOOKUPS_HEADER, "").lower() == "naive"
        return Context(
            viewer=getattr(request.state, "viewer", ANONYMOUS),
            request=request,
            response=response if isinstance(response, Response) else None,
            settings=settings,
            connections=connections,
            loaders=Loaders(connections, naive=naive),
            round_trips=round_trips,
            report_round_trips=settings.is_development
            or headers.get(ROUND_TRIPS_HEADER, "") in ("1", "true"),
        )

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


class AuthenticatedEndpoint:
    """Authenticates an HTTP request once, before GraphQL sees it; bad credentials get a 401
    with a GraphQL error body, and no operation runs."""

    def __init__(self, endpoint: ASGIApp) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            authenticator: Authenticator = request.app.state.authenticator
            try:
                request.state.viewer = await authenticator.viewer(
                    request.headers.get("authorization")
                )
            except AuthenticationError as error:
                response = JSONResponse(
                    {
                        "data": None,
                        "errors": [
                            {"message": str(error), "extensions": {"code": "UNAUTHENTICATED"}}
                        ],
                    },
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.endpoint(scope, receive, send)


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

    endpoint = GraphQLEndpoint(
        build_schema(),
        graphql_ide="graphiql",
        allow_queries_via_get=True,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
    )
    app = Starlette(
        routes=[
            Route(GRAPHQL_PATH, AuthenticatedEndpoint(endpoint), methods=["GET", "POST"]),
            WebSocketRoute(GRAPHQL_PATH, endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
