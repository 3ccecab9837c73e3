"""The stores' connection pools, with their waits timed and their use readable by the
metrics: PostgreSQL's and Redis's pools as subclasses that time a checkout, MongoDB's
through PyMongo's pool events (its pool is not PyMongo's to replace).

Only a checkout slower than ``WAIT_THRESHOLD`` is recorded: one that found every
connection in use, or waited for a new one. The rest cost two clock readings.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from pymongo import monitoring
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import AbstractConnection
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

from core.metrics import WAIT_THRESHOLD, pool_waited
from core.stores import Store

_postgres_waited = pool_waited(Store.POSTGRES.value)
_redis_waited = pool_waited(Store.REDIS.value)
_mongo_waited = pool_waited(Store.MONGODB.value)


class TimedQueuePool(AsyncAdaptedQueuePool):
    def _do_get(self) -> ConnectionPoolEntry:
        started = perf_counter()
        try:
            return super()._do_get()
        finally:
            waited = perf_counter() - started
            if waited > WAIT_THRESHOLD:
                _postgres_waited(waited)


class TimedConnectionPool(BlockingConnectionPool):
    async def get_connection(self, *args: Any, **options: Any) -> AbstractConnection:
        started = perf_counter()
        try:
            connection: AbstractConnection = await super().get_connection(  # type: ignore[no-untyped-call]
                *args, **options
            )
        finally:
            waited = perf_counter() - started
            if waited > WAIT_THRESHOLD:
                _redis_waited(waited)
        return connection

    @property
    def in_use(self) -> int:
        return len(self._in_use_connections)


class MongoPool(monitoring.ConnectionPoolListener):
    """The connections PyMongo has checked out, and its checkouts that waited."""

    def __init__(self) -> None:
        self.in_use = 0

    def connection_checked_out(self, event: monitoring.ConnectionCheckedOutEvent) -> None:
        self.in_use += 1
        waited = event.duration
        if waited is not None and waited > WAIT_THRESHOLD:
            _mongo_waited(waited)

    def connection_checked_in(self, event: monitoring.ConnectionCheckedInEvent) -> None:
        self.in_use -= 1

    def pool_created(self, event: monitoring.PoolCreatedEvent) -> None:
        return

    def pool_ready(self, event: monitoring.PoolReadyEvent) -> None:
        return

    def pool_cleared(self, event: monitoring.PoolClearedEvent) -> None:
        return

    def pool_closed(self, event: monitoring.PoolClosedEvent) -> None:
        return

    def connection_created(self, event: monitoring.ConnectionCreatedEvent) -> None:
        return

    def connection_ready(self, event: monitoring.ConnectionReadyEvent) -> None:
        return

    def connection_closed(self, event: monitoring.ConnectionClosedEvent) -> None:
        return

    def connection_check_out_started(
        self, event: monitoring.ConnectionCheckOutStartedEvent
    ) -> None:
        return

    def connection_check_out_failed(self, event: monitoring.ConnectionCheckOutFailedEvent) -> None:
        return
