"""Counting round trips to each store, per request.

A request binds a fresh ``RoundTrips`` to a context variable; the hooks below add to
whichever one is bound where the store call runs. Asyncio copies context into the tasks
and callbacks a request starts, so DataLoader batches count towards their request.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pymongo import monitoring
from redis.asyncio.connection import Connection as RedisConnection
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass
class RoundTrips:
    postgres: int = 0
    mongodb: int = 0
    redis: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"postgres": self.postgres, "mongodb": self.mongodb, "redis": self.redis}


current_round_trips: ContextVar[RoundTrips | None] = ContextVar("round_trips", default=None)


def count_postgres_round_trip(*_: Any) -> None:
    counter = current_round_trips.get()
    if counter is not None:
        counter.postgres += 1


def count_postgres_statements(engine: AsyncEngine) -> None:
    """Count what SQLAlchemy executes; reads sent to the driver directly count themselves
    (datasources/driver_reads.py)."""
    event.listen(engine.sync_engine, "before_cursor_execute", count_postgres_round_trip)


class MongoCommandCounter(monitoring.CommandListener):
    """Counts every command sent to MongoDB (find, getMore, aggregate, bulk writes...)."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        counter = current_round_trips.get()
        if counter is not None:
            counter.mongodb += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return


class CountingRedisConnection(RedisConnection):
    """A pipeline is packed into one send: counting sends counts round trips.

    The handshake of a new connection (HELLO, SELECT...) and the PING of a health check on
    a connection idle for a while are not counted: they belong to the pool, not to the
    request that happened to take the connection.
    """

    async def check_health(self) -> None:
        token = current_round_trips.set(None)
        try:
            await super().check_health()  # type: ignore[no-untyped-call]
        finally:
            current_round_trips.reset(token)

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        token = current_round_trips.set(None)
        try:
            await super().connect_check_health(check_health, retry_socket_connect)
        finally:
            current_round_trips.reset(token)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        counter = current_round_trips.get()
        if counter is not None:
            counter.redis += 1
        await super().send_packed_command(command, check_health)
