"""Every DataLoader of a request, built in one place.

A ``Loaders`` lives for one request, so its caches never outlive it. Each loader wraps a
batch function of ``datasources`` and turns a failing store (down, or slower than the
drivers' time limits) into a ``SERVICE_UNAVAILABLE`` error on the fields that needed it.
With ``naive`` set, every loader sends one store call per key, uncached: the per-field
lookups the benchmark compares the batched variant with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from aiodataloader import DataLoader
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from sqlalchemy import Row, Table
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from core.connections import Connections
from core.errors import ErrorCode, GatewayError
from datasources import listings, lookups, reports
from datasources.counters import ReportCounters, counters_by_report
from datasources.documents import documents_by_report
from datasources.keyset import Page, PageRequest
from datasources.models import Author, Institution, Report, ReportType, Technology
from datasources.reports import ReportParent, ReportSort

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

STORE_FAILURES: dict[str, tuple[type[BaseException], ...]] = {
    # Connection-level failures only: a constraint violation means the store answered.
    # SQLAlchemy's TimeoutError: no pooled connection came free within the pool timeout.
    "postgres": (OperationalError, InterfaceError, PoolTimeout, OSError, TimeoutError),
    "mongodb": (PyMongoError, OSError, TimeoutError),
    "redis": (RedisError, OSError, TimeoutError),
}


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


class Loaders:
    def __init__(
        self, connections: Connections, *, naive: bool = False, deadline: float | None = None
    ) -> None:
        self._connections = connections
        self._naive = naive
        self._deadline = deadline
        self._keyed: dict[Hashable, DataLoader[Any, Any]] = {}
        engine = connections.engine

        def by_id(model: Any) -> DataLoader[int, Row[Any] | None]:
            table = _table(model)
            return self._loader(
                "postgres", lambda ids: lookups.rows_by_id(engine=engine, table=table, ids=ids)
            )

        self.report = by_id(Report)
        self.author = by_id(Author)
        self.institution = by_id(Institution)
        self.report_type = by_id(ReportType)
        self.technology = by_id(Technology)
        self.authorships: DataLoader[int, list[Row[Any]]] = self._loader(
            "postgres",
            lambda ids: lookups.authorships_by_report(engine=engine, report_ids=ids),
        )
        self.technologies_of_report: DataLoader[int, list[Row[Any]]] = self._loader(
            "postgres",
            lambda ids: lookups.technologies_by_report(engine=engine, report_ids=ids),
        )
        self.document: DataLoader[int, dict[str, Any] | None] = self._loader(
            "mongodb",
            lambda ids: documents_by_report(database=connections.documents, report_ids=ids),
        )
        self.counters: DataLoader[int, ReportCounters | None] = self._loader(
            "redis", lambda ids: counters_by_report(redis=connections.redis, report_ids=ids)
        )

    async def call(self, store: str, operation: Awaitable[V]) -> V:
        """One store call outside a loader (a root list), under the same rules.

        Time limits are the drivers' own (see core/connections.py), never a
        cancellation from out here: cancelling PyMongo's async pool while it waits for a
        connection corrupts the pool's lock and hangs every later operation. For the same
        reason a cancelled caller (a client gone, a sibling field failed) stops waiting,
        but the store call itself runs to its end. Past the operation's deadline no new
        call starts: the operation winds down with errors instead of going on working for
        a client that has been answered.
        """
        if self._deadline is not None and asyncio.get_running_loop().time() > self._deadline:
            if asyncio.iscoroutine(operation):
                operation.close()  # never started: nothing to wait for
            raise GatewayError("the operation ran past its time limit", ErrorCode.DEADLINE_EXCEEDED)
        try:
            return await _run_to_completion(operation)
        except STORE_FAILURES[store] as error:
            raise GatewayError(
                f"{store} is unavailable; try again later",
                ErrorCode.SERVICE_UNAVAILABLE,
                store=store,
            ) from error

    def _loader(
        self, store: str, fetch: Callable[[Sequence[K]], Awaitable[Sequence[V]]]
    ) -> DataLoader[K, V]:
        async def batch(keys: list[K]) -> list[V]:
            return list(await self.call(store, fetch(keys)))

        if self._naive:
            return DataLoader(batch, batch=False, cache=False)
        return DataLoader(batch)

    def _keyed_loader(
        self,
        key: Hashable,
        store: str,
        fetch: Callable[[Sequence[K]], Awaitable[Sequence[V]]],
    ) -> DataLoader[K, V]:
        """A loader per distinct arguments: all parents asking for the same page of the
        same list share one batch."""
        loader = self._keyed.get(key)
        if loader is None:
            loader = self._keyed[key] = self._loader(store, fetch)
        return loader

    def report_pages(
        self, parent: ReportParent, sort: ReportSort, *, descending: bool, request: PageRequest
    ) -> DataLoader[int, Page]:
        ordering = reports.report_ordering(sort, descending=descending)
        engine = self._connections.engine
        return self._keyed_loader(
            ("report pages", parent, sort, descending, request),
            "postgres",
            lambda ids: reports.report_pages_by_parent(
                engine=engine, parent=parent, parent_ids=ids, ordering=ordering, request=request
            ),
        )

    def report_counts(self, parent: ReportParent) -> DataLoader[int, int]:
        engine = self._connections.engine
        return self._keyed_loader(
            ("report counts", parent),
            "postgres",
            lambda ids: reports.count_reports_by_parent(
                engine=engine, parent=parent, parent_ids=ids
            ),
        )

    def author_pages_by_institution(self, request: PageRequest) -> DataLoader[int, Page]:
        engine = self._connections.engine
        return self._keyed_loader(
            ("author pages", request),
            "postgres",
            lambda ids: listings.author_pages_by_institution(
                engine=engine, institution_ids=ids, request=request
            ),
        )

    def author_counts_by_institution(self) -> DataLoader[int, int]:
        engine = self._connections.engine
        return self._keyed_loader(
            "author counts",
            "postgres",
            lambda ids: listings.count_authors_by_institution(engine=engine, institution_ids=ids),
        )


async def _run_to_completion(operation: Awaitable[V]) -> V:
    task = asyncio.ensure_future(operation)
    # Nobody may await the task once its caller is cancelled: retrieve its outcome anyway,
    # so that a failure is not reported as "never retrieved".
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
