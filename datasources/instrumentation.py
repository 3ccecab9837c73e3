"""Counting round trips to each store, per request, and noting what they sent.

A request binds a fresh ``RoundTrips`` to a context variable; the hooks below add to
whichever one is bound where the store call runs. Asyncio copies context into the tasks
and callbacks a request starts, so DataLoader batches count towards their request.

When store calls are traced, each binds a list to ``current_commands`` and the noting
hooks add its statements (PostgreSQL) or commands (MongoDB, Redis) to it. They are
installed only then (``note_commands``, ``NotingRedisConnection``): untraced, the only
trace of them is the one look-up of reads sent to the driver directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pymongo import monitoring
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import SentinelManagedConnection
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources.explain import current_step, record_redis_command


@dataclass
class RoundTrips:
    postgres: int = 0
    mongodb: int = 0
    redis: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"postgres": self.postgres, "mongodb": self.mongodb, "redis": self.redis}


current_round_trips: ContextVar[RoundTrips | None] = ContextVar("round_trips", default=None)
current_commands: ContextVar[list[str] | None] = ContextVar("commands", default=None)


def note_command(command: str) -> None:
    commands = current_commands.get()
    if commands is not None:
        commands.append(command)


def count_postgres_round_trip(*_: Any) -> None:
    counter = current_round_trips.get()
    if counter is not None:
        counter.postgres += 1


def count_postgres_statements(engine: AsyncEngine) -> None:
    """Count what SQLAlchemy executes; reads sent to the driver directly count themselves
    (datasources/driver_reads.py)."""
    event.listen(engine.sync_engine, "before_cursor_execute", count_postgres_round_trip)


def _note_statement(_: Any, __: Any, statement: str, *___: Any) -> None:
    note_command(statement)


def note_commands(*engines: AsyncEngine) -> list[monitoring.CommandListener]:
    """Note the statements SQLAlchemy sends through ``engines``; the listeners that note
    MongoDB's commands, for its client."""
    for engine in engines:
        event.listen(engine.sync_engine, "before_cursor_execute", _note_statement)
    return [MongoCommandNoter()]


class MongoCommandNoter(monitoring.CommandListener):
    """A command's name and collection: its filters hold the request's values."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        note_command(
            f"{event.command_name} {target}" if isinstance(target, str) else event.command_name
        )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return


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


@contextmanager
def _for_the_pool() -> Iterator[None]:
    counted = current_round_trips.set(None)
    explained = current_step.set(None)
    try:
        yield
    finally:
        current_step.reset(explained)
        current_round_trips.reset(counted)


class RoundTripCounting(AbstractConnection):
    """A pipeline is packed into one send: counting sends counts round trips.

    The handshake of a new connection (HELLO, SELECT...) and the PING of a health check on
    a connection idle for a while are neither counted nor explained: they belong to the
    pool, not to the request that happened to take the connection.
    """

    async def check_health(self) -> None:
        with _for_the_pool():
            await super().check_health()  # type: ignore[no-untyped-call]

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        with _for_the_pool():
            await super().connect_check_health(check_health, retry_socket_connect)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        counter = current_round_trips.get()
        if counter is not None:
            counter.redis += 1
        await super().send_packed_command(command, check_health)

    def pack_command(self, *args: Any) -> list[bytes]:
        # Packed one by one, a pipeline's commands included, while still words.
        record_redis_command(args)
        return super().pack_command(*args)


class CommandNoting(RoundTripCounting):
    """Also notes the names of the commands sent (a pipeline's, one per line): their
    arguments are the request's keys and values."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if current_commands.get() is not None:
            packed = command if isinstance(command, (bytes, str)) else b"".join(command)
            note_command(" ".join(command_names(packed)))
        await super().send_packed_command(command, check_health)


# Each kind of connection the driver makes, counting its round trips; and also noting its
# commands. Mixed in ahead of the kind, which keeps its way of connecting.


class CountingRedisConnection(RoundTripCounting, Connection):
    """Over TCP."""


class NotingRedisConnection(CommandNoting, Connection):
    """Over TCP."""


class CountingTlsConnection(RoundTripCounting, SSLConnection):
    """Over TLS (``rediss://``)."""


class NotingTlsConnection(CommandNoting, SSLConnection):
    """Over TLS (``rediss://``)."""


class CountingUnixConnection(RoundTripCounting, UnixDomainSocketConnection):
    """On a Unix socket (``unix://``)."""


class NotingUnixConnection(CommandNoting, UnixDomainSocketConnection):
    """On a Unix socket (``unix://``)."""


class CountingSentinelConnection(RoundTripCounting, SentinelManagedConnection):
    """To the master the sentinels name."""


class NotingSentinelConnection(CommandNoting, SentinelManagedConnection):
    """To the master the sentinels name."""


# By the class the driver connects with, as a URL's scheme chooses it.
_COUNTED: dict[
    type[AbstractConnection], tuple[type[AbstractConnection], type[AbstractConnection]]
] = {
    Connection: (CountingRedisConnection, NotingRedisConnection),
    SSLConnection: (CountingTlsConnection, NotingTlsConnection),
    UnixDomainSocketConnection: (CountingUnixConnection, NotingUnixConnection),
}


def counted_connection(kind: type[AbstractConnection], *, noted: bool) -> type[AbstractConnection]:
    """``kind``, a connection over TCP, TLS or a Unix socket, that counts its round trips
    and, if ``noted``, notes its commands."""
    counting, noting = _COUNTED[kind]
    return noting if noted else counting


def command_names(packed: bytes | str) -> list[str]:
    """The names of the commands in RESP's encoding of them (arrays of bulk strings)."""
    data = packed.encode() if isinstance(packed, str) else bytes(packed)
    names: list[str] = []
    position = 0
    while data.startswith(b"*", position):
        end = data.index(b"\r\n", position)
        count = int(data[position + 1 : end])
        position = end + 2
        for index in range(count):
            end = data.index(b"\r\n", position)
            length = int(data[position + 1 : end])
            if index == 0:
                names.append(data[end + 2 : end + 2 + length].decode("latin-1").upper())
            position = end + 2 + length + 2
    return names
