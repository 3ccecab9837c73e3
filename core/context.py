"""What every resolver of a request sees.

A ``Context`` lives as long as its transport's unit: one HTTP request, or one WebSocket
connection, which may run many operations at once. What must not outlive one operation
(DataLoader caches, round-trip counts, the deadline) lives in an ``OperationScope``,
bound to the task that runs the operation.
"""

from __future__ import annotations

import asyncio
import os
import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import HTTPConnection
from starlette.responses import Response

from core import telemetry
from core.auth import ANONYMOUS, Viewer
from core.connections import Connections
from core.loaders import Loaders
from core.pubsub import Hub
from core.response_cache import ResponseCache
from core.settings import Settings
from core.stores import Store, completed_within, unavailable
from datasources.explain import Recording
from datasources.instrumentation import RoundTrips, current_round_trips


@dataclass
class OperationScope:
    loaders: Loaders
    round_trips: RoundTrips
    # In the event loop's clock.
    deadline: float
    cost: int = 0
    # Which executor runs it: Strawberry's, unless the planner takes it (gateway/http.py).
    executor: str = "strawberry"


current_operation: ContextVar[OperationScope] = ContextVar("operation")

# Ask for the round trips per store, or the operation's cost, in the response's extensions
# (always there in development).
ROUND_TRIPS_HEADER = "x-gateway-round-trips"
COST_HEADER = "x-gateway-cost"
# "naive": one store call per lookup, for benchmarks; honoured only when the settings allow.
LOOKUPS_HEADER = "x-gateway-lookups"
REQUEST_ID_HEADER = "x-request-id"
# "strawberry": run a query on Strawberry's executor rather than the planned one (the
# differential tests compare the two).
EXECUTOR_HEADER = "x-gateway-executor"
# Explain the operation: what each store ran, with its plans, in the response's extensions
# (admins only; see gateway/explain.py).
EXPLAIN_HEADER = "x-gateway-explain"
# The announcements to subscribers under way (the loop keeps only weak references to its
# tasks).
_ANNOUNCING: set[asyncio.Task[None]] = set()
# A request id a client or proxy gives is kept only if it cannot forge a log line.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class PreparedDocuments(Protocol):
    """The application's cache of documents prepared for the schema, under its limits
    (gateway/operations.py): one schema serves every application of a process, and the
    operations that Strawberry's executor runs take their documents from here."""

    @property
    def limits(self) -> Any: ...

    def prepare(self, query: str) -> Any: ...


@dataclass
class Context:
    request: HTTPConnection
    response: Response | None
    settings: Settings
    connections: Connections
    request_id: str
    operations: PreparedDocuments
    # What the response's extensions carry: the round trips per store, the cost.
    report_round_trips: bool = False
    report_cost: bool = False
    # One store call per lookup instead of batches (benchmarks only).
    naive_lookups: bool = False
    # Record what each store call of the operation sends, to explain it afterwards.
    explain: bool = False
    viewer: Viewer = ANONYMOUS
    # A WebSocket's connection_init payload (where its credentials are).
    connection_params: dict[str, Any] = field(default_factory=dict)
    cache: ResponseCache | None = None
    # The process's pub/sub connection: what subscriptions listen through.
    hub: Hub | None = None
    # Whether the operation's response may be cached, so that its reads record their tags;
    # and the scope of the operation it began last.
    caching: bool = False
    scope: OperationScope | None = None

    @classmethod
    def of(cls, connection: HTTPConnection, response: Response | None, viewer: Viewer) -> Context:
        """The context of an HTTP request or a WebSocket connection."""
        settings: Settings = connection.app.state.settings
        headers = connection.headers
        request_id = request_id_of(headers.get(REQUEST_ID_HEADER, ""))
        # The log lines and spans of the task that serves the request or connection say it.
        telemetry.current_request_id.set(request_id)
        return cls(
            request=connection,
            response=response,
            settings=settings,
            connections=connection.app.state.connections,
            request_id=request_id,
            operations=connection.app.state.operations,
            report_round_trips=settings.is_development or _asks(headers.get(ROUND_TRIPS_HEADER)),
            report_cost=settings.is_development or _asks(headers.get(COST_HEADER)),
            naive_lookups=settings.allow_naive_lookups
            and headers.get(LOOKUPS_HEADER, "").lower() == "naive",
            # Over HTTP only, where the answer carries the explanation.
            explain=connection.scope["type"] == "http" and _asks(headers.get(EXPLAIN_HEADER)),
            viewer=viewer,
            cache=getattr(connection.app.state, "response_cache", None),
            hub=getattr(connection.app.state, "hub", None),
        )

    def begin_operation(self) -> OperationScope:
        """A fresh scope for the operation the current task is about to run.

        Bound here, in the operation's task: every store call made for it, DataLoader
        batches included (asyncio copies the binding into the tasks it starts), counts
        towards it and keeps to its deadline.
        """
        deadline = asyncio.get_running_loop().time() + self.settings.execution_timeout
        round_trips = RoundTrips()
        scope = OperationScope(
            loaders=Loaders(
                self.connections,
                naive=self.naive_lookups,
                deadline=deadline,
                read_limit=self.settings.store_timeout,
                record_tags=self.caching,
                explained=Recording() if self.explain else None,
            ),
            round_trips=round_trips,
            deadline=deadline,
        )
        current_round_trips.set(round_trips)
        current_operation.set(scope)
        self.scope = scope
        return scope

    async def invalidate(self, *tags: str) -> None:
        """After a write: no cached response that read ``tags`` is served again."""
        if self.cache is not None:
            await self.cache.invalidate(tags)

    async def announce(self, channel: str) -> None:
        """After a write: the subscribers of ``channel``, on every process, read again.
        Sent in the background, within the store timeout: the write has succeeded whatever
        becomes of it. Not through Redis's circuit, which would drop it while open even
        with the pub/sub connections up, the subscribers then never told; and a Redis
        merely slow to take it is no reason to fail every read. An announcement lost to
        an outage only delays subscribers until Redis is back (they read again then)."""
        if self.hub is None:
            return
        task = asyncio.create_task(self._announced(self.hub, channel))
        _ANNOUNCING.add(task)
        task.add_done_callback(_ANNOUNCING.discard)

    async def _announced(self, hub: Hub, channel: str) -> None:
        try:
            await completed_within(
                hub.announce(channel),
                Store.REDIS,
                self.settings.store_timeout,
                self.connections.calls,
            )
        except Exception as error:
            if not unavailable(Store.REDIS, error):
                raise

    @property
    def operation(self) -> OperationScope:
        return current_operation.get()

    @property
    def loaders(self) -> Loaders:
        return current_operation.get().loaders


def request_id_of(given: str) -> str:
    """The request's id: the client's, if it cannot forge a log line, else a new one."""
    return given if CLIENT_REQUEST_ID.fullmatch(given) else os.urandom(16).hex()


def _asks(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true")
