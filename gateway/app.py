"""The ASGI application: GraphQL over HTTP and WebSocket, health probes, CORS, and the
lifespan that owns the stores' clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from core.auth import Authenticator
from core.errors import INTERNAL_MESSAGE
from core.pools import TimedSentinelPool
from core.pubsub import Hub
from core.response_cache import ResponseCache
from core.settings import Settings
from core.stores import Store
from datasources.api_keys import REVOKED_CHANNEL
from gateway import metrics, tracing
from gateway.cached_responses import EarlyHits
from gateway.collector import collect_young_generation, tune_garbage_collector
from gateway.cors import JSONErrorCORSMiddleware, OriginPolicy
from gateway.health import Readiness, healthz
from gateway.http import GraphQLOverHTTP
from gateway.limits import Limits
from gateway.live import Feeds
from gateway.pages import page_routes
from gateway.persisted_queries import PersistedQueries
from gateway.rate_limits import RateLimits
from gateway.responses import error_response
from gateway.runtime import (
    reconcile_stores,
    refresh_counter_snapshots,
    running_stores,
    snapshot_counters_now,
)
from gateway.schema import catalogue_schema, operation_cache
from gateway.websocket import GraphQLOverWebSocket

logger = logging.getLogger(__name__)
GRAPHQL_PATH = "/graphql"


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
    return error_response(500, INTERNAL_MESSAGE, request.headers)


def _background(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """``work`` in a task of its own, whose failure is logged as it happens: the other
    background work, the requests and the shutdown's own steps (the counters' last copy,
    the clients' closing) go on without it."""
    task = asyncio.create_task(work)
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        # Its traceback says which work it was.
        logger.error("background work stopped", exc_info=error)


def create_app(settings: Settings | None = None, *, supervised: bool = False) -> Starlette:
    """The application; ``supervised`` for a worker of ``serve --workers``, whose supervisor
    applies the migrations and reconciles the stores once for all its workers."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            tracing.exported(settings),
            running_stores(
                settings, apply_migrations=settings.is_development and not supervised
            ) as connections,
        ):
            app.state.connections = connections
            authenticator = app.state.authenticator = Authenticator(
                settings, connections.reader, connections.circuits[Store.POSTGRES]
            )
            hub = app.state.hub = Hub(connections.redis)
            hub.listen(REVOKED_CHANNEL, authenticator)
            await hub.start()
            cache = app.state.response_cache = (
                ResponseCache(
                    connections.redis,
                    hub,
                    ttl=settings.cache_ttl,
                    ttls=settings.cache_ttls,
                    volatile_ttl=settings.cache_volatile_ttl,
                    memory_bytes=settings.cache_memory_bytes,
                    timeout=settings.store_timeout,
                )
                if settings.response_cache
                else None
            )
            if cache is not None:
                cache.start()
            # Background work stops at a signal and finishes its current store call;
            # it is never cancelled half-way through one (see runtime.py).
            stop = asyncio.Event()
            interval = settings.counter_snapshot_interval
            redis_pool = connections.redis.connection_pool
            background = [
                # Settle what a process that died mid-write left, without delaying start-up.
                *([] if supervised else [_background(reconcile_stores(connections, stop))]),
                *(
                    [_background(refresh_counter_snapshots(connections, interval, stop, cache))]
                    if interval
                    else []
                ),
                _background(collect_young_generation(stop, feeds)),
                *(
                    [_background(redis_pool.follow_failovers(stop))]
                    if isinstance(redis_pool, TimedSentinelPool)
                    else []
                ),
                # Workers that share their metrics write their state for any of them to serve.
                *(
                    [_background(metrics.sample_every(app.state.sampler, stop))]
                    if metrics.shared()
                    else []
                ),
            ]
            tune_garbage_collector()
            logger.info("GraphiQL at http://%s:%d%s", settings.host, settings.port, GRAPHQL_PATH)
            try:
                yield
            finally:
                stop.set()
                await feeds.stop()
                # A task that failed has been logged; the shutdown goes on without it.
                await asyncio.gather(*background, return_exceptions=True)
                # What was counted since the last copy outlives Redis losing its data.
                await snapshot_counters_now(connections, settings.shutdown_timeout)
                if cache is not None:
                    cache.stop()
                await hub.stop()

    schema = catalogue_schema()
    operations = operation_cache(Limits.from_settings(settings))
    origins = OriginPolicy(settings)
    persisted = PersistedQueries(settings)
    feeds = Feeds(schema)
    rate_limits = RateLimits(settings)
    # One count of operation names for both transports: their labels share one limit.
    requests = metrics.RequestMetrics(settings.metrics_operations)
    graphql = GraphQLPath(
        GraphQLOverHTTP(
            schema, settings, persisted, feeds,
            operations=operations, rate_limits=rate_limits, requests=requests,
        ),
        GraphQLOverWebSocket(
            schema, settings, origins, persisted, feeds,
            operations=operations, rate_limits=rate_limits, requests=requests,
        ),
    )  # fmt: skip
    app = Starlette(
        routes=[
            # Every method reaches the endpoint, which answers the ones it refuses in JSON.
            Route(GRAPHQL_PATH, graphql, methods=None),
            WebSocketRoute(GRAPHQL_PATH, graphql),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", Readiness().answer, methods=["GET", "HEAD"]),
            Route("/metrics", metrics.scrape, methods=["GET", "HEAD"]),
            *page_routes(),
        ],
        middleware=[
            Middleware(EarlyHits, path=GRAPHQL_PATH, settings=settings),
            Middleware(JSONErrorCORSMiddleware, policy=origins),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.operations = operations
    app.state.feeds = feeds
    app.state.sampler = metrics.Sampler(app.state)
    return app
