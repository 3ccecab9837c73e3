"""``GET /metrics``: the gateway's metrics (declared in core/metrics.py) in Prometheus's
text format, what the HTTP endpoint records of each request it serves, and the state of
the process read into gauges.

Queries and mutations over WebSocket are counted as requests too, with the execution
``websocket``, from the message that starts one to the last one the gateway sends of it;
their round trips are not told apart from the connection's other operations'. Subscriptions
are counted once each when asked for, by transport; what they cost afterwards is in the
feeds' gauges.

A request's ``operation`` label is the name its document gives the operation it runs:
``anonymous`` for an unnamed one, ``none`` where no operation was read (a request refused
before, a cache hit answered before parsing), and ``other`` past the first
``GATEWAY_METRICS_OPERATIONS`` distinct names a process has met: clients choose names,
and every name is a series of its own.

Under ``serve --workers`` (``PROMETHEUS_MULTIPROC_DIR`` set by the supervisor), a scrape
answered by any worker adds up the files every worker writes; each worker writes its
state every ``SAMPLE_EVERY`` seconds, and the one that answers just before.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode
from opentelemetry.trace import Span
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from starlette.datastructures import State
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from core.connections import Connections
from core.context import Context
from core.errors import ErrorCode
from core.metrics import (
    CACHE_HITS,
    CACHE_INVALIDATIONS,
    CACHE_MISSES,
    CACHE_SINGLE_FLIGHT_WAITS,
    CACHE_STORED,
    CACHE_STORED_BYTES,
    ERRORS,
    FEEDS,
    POOL_IN_USE,
    POOL_LIMIT,
    REQUEST_SECONDS,
    REQUESTS,
    ROUND_TRIPS,
    STORE_UP,
    SUBSCRIBERS,
    SUBSCRIPTIONS,
)
from core.pools import TimedConnectionPool
from core.response_cache import CacheCounters
from core.stores import Store
from core.telemetry import REQUEST_ID
from core.waiting import set_within
from gateway.operations import PreparedDocument
from gateway.responses import EVENT_STREAM

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
# Seconds between two writes of a worker's state, when workers share their metrics.
SAMPLE_EVERY = 1.0
# Where the endpoint keeps what a request came to, for its metrics and its span.
SERVED = "gateway.served"
OK, WITH_ERRORS, REJECTED, FAILED = "ok", "errors", "rejected", "failed"
CACHE, NONE, ANONYMOUS, OTHER = "cache", "none", "anonymous", "other"
# Transports of operations that are not one HTTP request each.
WEBSOCKET, EVENTS = "websocket", "sse"
# Characters of an operation's name kept as a label.
NAME_LENGTH = 100
CODES = frozenset(code.value for code in ErrorCode)
ROUND_TRIPS_BY_STORE = {store.value: ROUND_TRIPS.labels(store.value).inc for store in Store}
# A cache hit answered before the endpoint (gateway/cached_responses.py): its one cost here.
EARLY_HIT = REQUESTS.labels(NONE, OK, CACHE).inc
_Children = tuple[Callable[[], None], Callable[[float], None]]
slow_logger = logging.getLogger("gateway.slow")


@dataclass(slots=True)
class Served:
    """What a request came to: the operation it runs once read (its name in the document,
    "" for an unnamed one), its outcome, how it was answered, and its context."""

    operation: str | None = None
    outcome: str = OK
    execution: str = NONE
    context: Context | None = None
    prepared: PreparedDocument | None = None
    # The operation's name as the request gave it, and its variables: what its cost is of.
    asked: str | None = None
    variables: dict[str, Any] | None = None

    def runs(
        self,
        operation: OperationDefinitionNode,
        prepared: PreparedDocument,
        asked: str | None,
        variables: dict[str, Any] | None,
    ) -> None:
        self.operation = operation.name.value if operation.name else ""
        self.prepared, self.asked, self.variables = prepared, asked, variables

    def answered(self, response: Response) -> bool:
        """Whether ``response`` answers a GraphQL request, rather than being a preflight,
        GraphiQL's page or an event stream; and by what: the cache, or an executor."""
        if (self.context is None and self.outcome == OK) or response.media_type == EVENT_STREAM:
            return False
        if response.headers.get("x-cache") == "HIT":
            self.execution = CACHE
        elif self.context is not None and self.context.scope is not None:
            self.execution = self.context.scope.executor
        return True

    def describe(self, span: Span, response: Response) -> None:
        span.set_attributes(
            {
                "http.response.status_code": response.status_code,
                "gateway.outcome": self.outcome,
                "gateway.execution": self.execution,
            }
        )
        if self.operation is not None:
            span.set_attribute("graphql.operation.name", self.operation)
        context = self.context
        if context is not None:
            span.set_attribute(REQUEST_ID, context.request_id)
            if context.scope is not None:
                for store, count in context.scope.round_trips.as_dict().items():
                    span.set_attribute(f"gateway.round_trips.{store}", count)

    def log_slow(self, seconds: float) -> None:
        context = self.context
        if self.prepared is None or context is None or context.scope is None:
            return
        round_trips = context.scope.round_trips.as_dict()
        cost = self.prepared.cost(self.asked, self.variables)
        slow_logger.warning(
            "slow operation %s: %.3fs, cost %d, round trips %s (request %s)",
            self.operation or ANONYMOUS,
            seconds,
            cost,
            ", ".join(f"{store} {count}" for store, count in round_trips.items()),
            context.request_id,
            extra={
                "operation": self.operation or ANONYMOUS,
                "seconds": round(seconds, 6),
                "cost": cost,
                "round_trips": round_trips,
                "execution": self.execution,
            },
        )


def served_of(connection: HTTPConnection) -> Served:
    served: Served = connection.scope[SERVED]
    return served


def failed_with(connection: HTTPConnection, errors: Iterable[GraphQLError], status: int) -> None:
    """A response with ``errors``: refused (4xx, or before execution) or failed (5xx)."""
    served_of(connection).outcome = FAILED if status >= 500 else REJECTED
    count_errors(errors)


def answered_with(connection: HTTPConnection, errors: list[GraphQLError] | None) -> None:
    """An executed operation's response, with its fields' errors, if any."""
    if errors:
        served_of(connection).outcome = WITH_ERRORS
        count_errors(errors)


_errors_by_code: dict[str, Callable[[], None]] = {}


def count_errors(errors: Iterable[GraphQLError]) -> None:
    count_codes((error.extensions or {}).get("code") for error in errors)


def count_formatted(errors: Iterable[object]) -> None:
    """Errors as a protocol message carries them: formatted, each with its code."""
    count_codes(
        error.get("extensions", {}).get("code") if isinstance(error, Mapping) else None
        for error in errors
    )


def count_codes(codes: Iterable[object]) -> None:
    for code in codes:
        label = code if isinstance(code, str) and code in CODES else OTHER
        count = _errors_by_code.get(label)
        if count is None:
            count = _errors_by_code[label] = ERRORS.labels(label).inc
        count()


class RequestMetrics:
    """Requests by operation, outcome and execution (the executor that ran it, ``cache``,
    or ``none``), with their latency, and the round trips their operations made."""

    def __init__(self, max_operations: int) -> None:
        self._max_operations = max_operations
        self._names: set[str] = set()
        self._children: dict[tuple[str, str, str], _Children] = {}

    def operation_label(self, name: str | None) -> str:
        if name is None:
            return NONE
        if not name:
            return ANONYMOUS
        name = name[:NAME_LENGTH]
        if name in self._names:
            return name
        if len(self._names) < self._max_operations:
            self._names.add(name)
            return name
        return OTHER

    def record(self, served: Served, seconds: float) -> None:
        key = (self.operation_label(served.operation), served.outcome, served.execution)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                REQUESTS.labels(*key).inc,
                REQUEST_SECONDS.labels(*key).observe,
            )
        children[0]()
        children[1](seconds)
        context = served.context
        if context is not None and context.scope is not None:
            for store, count in context.scope.round_trips.as_dict().items():
                if count:
                    ROUND_TRIPS_BY_STORE[store](count)

    def subscribed(self, operation: str | None, transport: str, outcome: str) -> None:
        SUBSCRIPTIONS.labels(self.operation_label(operation), transport, outcome).inc()


class StreamedOperations:
    """The queries and mutations one WebSocket connection runs, each counted as a request
    when the gateway sends its last message (``complete``, or ``error`` for one refused)."""

    __slots__ = ("_requests", "_running")

    def __init__(self, requests: RequestMetrics) -> None:
        self._requests = requests
        self._running: dict[object, tuple[Served, float]] = {}

    def started(self, id: str, operation: str | None, arrived: float) -> None:
        self._running[id] = (Served(operation, execution=WEBSOCKET), arrived)

    def refused(self, errors: Iterable[object], arrived: float) -> None:
        """An operation refused before it started (its document is not read yet)."""
        count_formatted(errors)
        self._requests.record(
            Served(outcome=REJECTED, execution=WEBSOCKET), perf_counter() - arrived
        )

    def forget(self, id: str) -> None:
        self._running.pop(id, None)

    def sent(self, message: Mapping[str, Any]) -> None:
        id = message.get("id")
        running = self._running.get(id)
        if running is None:
            return
        served, arrived = running
        kind, payload = message.get("type"), message.get("payload")
        if kind in ("next", "data") and isinstance(payload, Mapping) and payload.get("errors"):
            served.outcome = WITH_ERRORS
            count_formatted(payload["errors"])
        elif kind == "error":
            served.outcome = REJECTED
            count_formatted(payload if isinstance(payload, list) else [payload])
        if kind in ("complete", "error"):
            del self._running[id]
            self._requests.record(served, perf_counter() - arrived)


@dataclass
class Sampler:
    """The process's state into the metrics: its pools, circuits, response cache and
    subscriptions."""

    state: State
    _cache_seen: dict[str, float] = field(default_factory=dict)

    def sample(self) -> None:
        connections: Connections | None = getattr(self.state, "connections", None)
        if connections is not None:
            _sample_stores(connections)
        cache = getattr(self.state, "response_cache", None)
        if cache is not None:
            self._sample_cache(cache.counters)
        feeds = self.state.feeds
        FEEDS.set(feeds.running)
        SUBSCRIBERS.set(feeds.subscribers)

    def _sample_cache(self, counters: CacheCounters) -> None:
        """Counters go up by what the cache counted since the last sample."""
        for name, value, counter in (
            ("memory", counters.hits["memory"], CACHE_HITS.labels("memory")),
            ("redis", counters.hits["redis"], CACHE_HITS.labels("redis")),
            ("misses", counters.misses, CACHE_MISSES),
            ("stored", counters.stored, CACHE_STORED),
            ("stored_bytes", counters.stored_bytes, CACHE_STORED_BYTES),
            ("invalidations", counters.invalidations, CACHE_INVALIDATIONS),
            ("single_flight_waits", counters.single_flight_waits, CACHE_SINGLE_FLIGHT_WAITS),
        ):
            gained = value - self._cache_seen.get(name, 0)
            if gained > 0:
                counter.inc(gained)
                self._cache_seen[name] = value


def _sample_stores(connections: Connections) -> None:
    for store, circuit in connections.circuits.items():
        STORE_UP.labels(store.value).set(0 if circuit.is_open else 1)
    postgres = connections.relational_pools
    redis = connections.redis.connection_pool
    assert isinstance(redis, TimedConnectionPool)
    usage = {
        Store.POSTGRES: (
            sum(pool.checkedout() for pool in postgres),
            sum(pool.size() for pool in postgres),
        ),
        Store.REDIS: (redis.in_use, redis.max_connections),
        Store.MONGODB: (
            connections.mongo_pool.in_use,
            connections.mongo.options.pool_options.max_pool_size,
        ),
    }
    for store, (in_use, limit) in usage.items():
        POOL_IN_USE.labels(store.value).set(in_use)
        POOL_LIMIT.labels(store.value).set(limit)


def shared() -> bool:
    """Whether this process's metrics are written for a scrape to add up with others'."""
    return MULTIPROCESS_DIRECTORY in os.environ


async def sample_every(sampler: Sampler, stop: asyncio.Event) -> None:
    while not await set_within(stop, SAMPLE_EVERY):
        sampler.sample()


async def scrape(request: Request) -> Response:
    request.app.state.sampler.sample()
    if shared():
        body = await asyncio.to_thread(_every_process)
    else:
        body = generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _every_process() -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
