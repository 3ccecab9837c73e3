"""The stores' connection pools, with their waits timed and their use readable by the
metrics: PostgreSQL's and Redis's pools as subclasses that time a checkout, MongoDB's
through PyMongo's pool events (its pool is not PyMongo's to replace).

Only a checkout slower than ``WAIT_THRESHOLD`` is recorded: one that found every
connection in use, or waited for a new one. The rest cost two clock readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from time import perf_counter
from typing import Any

from pymongo import monitoring
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import AbstractConnection, RedisSSLContext, SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

from core.metrics import WAIT_THRESHOLD, pool_waited
from core.outages import Outage
from core.pubsub import LISTEN_FOR, RECONNECT_AFTER, REDIS_FAILURES
from core.stores import Store
from core.waiting import set_within

logger = logging.getLogger(__name__)

# Where the sentinels announce each failover they have made.
SWITCH_MASTER = "+switch-master"

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


# SQLAlchemy names a pool's logger after its class, and quiets its own pools' (under
# "sqlalchemy") to warnings: this one's would write its state at each shutdown.
logging.getLogger(f"{__name__}.{TimedQueuePool.__name__}").setLevel(logging.WARNING)


# The process's TLS contexts for Redis, by their options: the driver makes one for each
# connection, loading the system's certificate authorities again, about 20 ms of processor
# time each. Certificate files are read once, then: a rotated one at the next start.
_TLS_CONTEXTS: dict[tuple[object, ...], RedisSSLContext] = {}


def _shared(context: RedisSSLContext) -> RedisSSLContext:
    options = tuple(
        tuple(value) if isinstance(value, list) else value
        for value in (
            getattr(context, name) for name in RedisSSLContext.__slots__ if name != "context"
        )
    )
    return _TLS_CONTEXTS.setdefault(options, context)


class TimedConnectionPool(BlockingConnectionPool):
    def make_connection(self) -> AbstractConnection:
        connection: AbstractConnection = super().make_connection()  # type: ignore[no-untyped-call]
        if isinstance(connection, SSLConnection):
            connection.ssl_context = _shared(connection.ssl_context)
        return connection

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


class TimedSentinelPool(TimedConnectionPool, SentinelConnectionPool):
    """Connections to the master that the sentinels name: a new connection asks them where
    it is, and a master that changed sends the idle connections to the new one (and those
    in use, once they are given back).

    Blocking and timed like the plain pool: redis-py's own pool for Sentinel is neither."""

    async def follow_failovers(self, stop: asyncio.Event) -> None:
        """Until ``stop``: at each failover the sentinels announce, ask them for the new
        master at once.

        Otherwise the pool would learn of it only when the old master fails a command: a
        killed one at once, but a demoted one only once the sentinels have made it a replica
        (its READONLY answer), seconds later; the writes it took meanwhile are lost when it
        copies the new master."""
        sentinels = itertools.cycle(self.sentinel_manager.sentinels)
        outage = Outage(
            logger,
            began="the Redis sentinels do not answer, or name no master",
            ended="the Redis sentinels name a master again",
        )
        while not stop.is_set():
            pubsub = next(sentinels).pubsub()
            try:
                await pubsub.subscribe(SWITCH_MASTER)
                # A failover while no sentinel was heard.
                await self.get_master_address()  # type: ignore[no-untyped-call]
                outage.recovered()
                while not stop.is_set():
                    message = await pubsub.get_message(timeout=LISTEN_FOR)
                    if message is not None and _names(message, self.service_name):
                        await self.get_master_address()  # type: ignore[no-untyped-call]
            except REDIS_FAILURES as error:
                outage.failed(error)
            finally:
                with contextlib.suppress(*REDIS_FAILURES):
                    await pubsub.aclose()
            await set_within(stop, RECONNECT_AFTER)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        # All connections, in use too, go only when the client closes (a change of master
        # drops the idle ones alone): the sentinels' clients close with it.
        if inuse_connections:
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


def _names(message: dict[str, Any], service: str) -> bool:
    """Whether a ``+switch-master`` message is about ``service``: its data is the service's
    name, then the old master's address and the new one's."""
    if message.get("type") != "message":
        return False
    data = message["data"]
    words = (data.decode() if isinstance(data, bytes) else str(data)).split()
    return bool(words) and words[0] == service


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
