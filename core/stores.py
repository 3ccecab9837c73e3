"""The three stores as the gateway meets them: which failures mean that a store is
unavailable (rather than that it refused what it was asked), and a circuit per store that
fails calls at once while it is known to be down.

A store that is down costs each call the drivers' time limits (a connection attempt, a
server selection) before it fails. With the circuit open, calls fail at once instead; after
``OPEN_FOR`` seconds one call is let through as a probe, and its outcome closes the circuit
or keeps it open. So a store's outage costs its own fields, at once, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import sysconfig
from collections.abc import Awaitable
from enum import StrEnum
from time import monotonic
from typing import Any, TypeVar

from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from core.outages import Outage, causes, reason
from core.store_urls import StoreUrls, server_address
from datasources.dialects import CONNECTION_FAILURES

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds a circuit stays open before a probe may pass.
OPEN_FOR = 1.0
# Consecutive failures that open a circuit: one failed call may be a connection that a
# restart broke, which the pool then replaces.
FAILURES_TO_OPEN = 2
# Seconds with reads waiting and no answer from a store, after which it is taken as hung.
# Under load a working store answers many calls a second; a single slow statement at
# rest that outlasts it is answered SERVICE_UNAVAILABLE, and goes on to its end.
HUNG_AFTER = 2.0


class Store(StrEnum):
    POSTGRES = "postgres"
    MONGODB = "mongodb"
    REDIS = "redis"


_POSTGRES = (
    OperationalError,
    InterfaceError,
    PoolTimeout,
    # Raised by a driver itself as a connection is set up, for the reads sent to it
    # directly (which take their connections from the pool itself) as for any other: the
    # connection is gone or refused, the server is shutting down or starting, or SQLite's
    # file cannot be opened.
    *CONNECTION_FAILURES,
)
_ANY_STORE = (OSError, TimeoutError)


def unavailable(store: Store, error: BaseException) -> bool:
    """Whether ``error`` says that ``store`` could not be reached or did not answer in
    time, rather than that it refused the call (a constraint, a bad statement)."""
    links = list(causes(error))
    # A refusal answers for the store, whatever the driver reported it as.
    if any(isinstance(link, (IntegrityError, DataError)) for link in links):
        return False
    return any(_unavailable(store, link) for link in links)


def _unavailable(store: Store, error: BaseException) -> bool:
    if isinstance(error, _ANY_STORE):
        return True
    if store is Store.POSTGRES:
        return isinstance(error, _POSTGRES) or (
            isinstance(error, DBAPIError) and error.connection_invalidated
        )
    if store is Store.MONGODB:
        # PyMongo's async pool can fail with a RuntimeError of its own (a lock released
        # twice) after the server came back: the store is as unusable as if it were down.
        return isinstance(error, PyMongoError) or (
            isinstance(error, RuntimeError) and _raised_in(error, "pymongo")
        )
    return isinstance(error, RedisError)


# The packages whose errors are each store's: its drivers, and what wraps them.
_PACKAGES = {
    Store.POSTGRES: ("sqlalchemy", "asyncpg", "asyncmy", "aiosqlite"),
    Store.MONGODB: ("pymongo",),
    Store.REDIS: ("redis",),
}
_STANDARD_LIBRARY = sysconfig.get_paths()["stdlib"]


def unreachable_store(error: BaseException) -> Store | None:
    """The store that ``error`` says could not be reached (as ``unavailable`` reads it);
    None for any other error."""
    for link in causes(error):
        store = _raised_by(link)
        if store is not None:
            return store if unavailable(store, error) else None
    return None


def not_answering(error: BaseException, backend: str, urls: StoreUrls) -> str | None:
    """What an operator reads of ``error`` where it says a store could not be reached:
    which store, by its name on ``backend``, where (by ``urls``), and why in its driver's
    words. None for any other error.

    The address is the gateway's to give: a driver's words may not have it. On uvloop,
    the event loop that serves, a connection refused says only that."""
    store = unreachable_store(error)
    if store is None:
        return None
    url = {
        Store.POSTGRES: urls.database_url,
        Store.MONGODB: urls.mongo_url,
        Store.REDIS: urls.redis_url,
    }[store]
    where = f" at {server_address(url)}" if url else ""
    return f"{store_name(store, backend)}{where} does not answer ({reason(error)})"


def store_name(store: Store, backend: str) -> str:
    """``store`` as its operator knows it: the relational store by its ``backend``'s name
    (``mysql``, ``sqlite``) where that is not PostgreSQL, whose name the figures use."""
    return backend if store is Store.POSTGRES and backend != "postgresql" else store.value


def _raised_by(error: BaseException) -> Store | None:
    """The store whose package raised ``error``: the innermost frame outside the standard
    library (a socket's connect, a TLS handshake) decides; another package's, or ours,
    raised it for reasons of its own."""
    for name in reversed(_source_files(error)):
        if not _in_event_loop(name):
            return next(
                (
                    store
                    for store, packages in _PACKAGES.items()
                    if any(_in_package(name, package) for package in packages)
                ),
                None,
            )
    return None


def _in_event_loop(file: str) -> bool:
    """Whether ``file`` is the event loop's or the standard library's, which raise for
    whoever called them: asyncio's, or uvloop's, which serves."""
    return (file.startswith(_STANDARD_LIBRARY) and "-packages" not in file) or _in_package(
        file, "uvloop"
    )


def _raised_in(error: BaseException, package: str) -> bool:
    return any(_in_package(name, package) for name in _source_files(error))


def _source_files(error: BaseException) -> list[str]:
    """The files of the frames ``error`` passed through, outermost first."""
    files = []
    traceback = error.__traceback__
    while traceback is not None:
        files.append(traceback.tb_frame.f_code.co_filename)
        traceback = traceback.tb_next
    return files


def _in_package(file: str, package: str) -> bool:
    # Compiled modules name their sources from the package down.
    return f"/{package}/" in file or file.startswith(f"{package}/")


async def completed_within(
    operation: Awaitable[T], store: Store, limit: float | None, calls: StoreCalls
) -> T:
    """``operation``'s outcome, waited for ``limit`` seconds at most (TimeoutError past
    them), never cancelled: cancelling PyMongo's async pool while it waits for a connection
    corrupts the pool's lock and hangs every later operation. A caller that stops waiting,
    or is cancelled, leaves the call to ``store`` to run to its end, among ``calls``."""
    task = calls.start(operation, store)
    done, _ = await asyncio.wait({task}, timeout=limit)
    if not done:
        raise TimeoutError(f"no answer within {limit:g}s")
    return task.result()


class StoreCalls:
    """The calls made through one set of clients, each run in a task of its own (see
    ``completed_within``), which may outlive its caller.

    The clients close once the relational calls have ended. Such a call left running holds
    a pooled connection: SQLAlchemy's pool, disposed of, closes the connections it holds but
    not those checked out, and one checked in after that stays open in a pool that nothing
    reaches, until the garbage collector drops it unclosed. MongoDB's and Redis's clients
    close the connections their calls hold themselves."""

    def __init__(self, timeout: float) -> None:
        # How long closing waits: past the store timeout, a driver gives up a call's step.
        self._timeout = timeout
        self._relational: set[asyncio.Future[Any]] = set()

    def start(self, operation: Awaitable[T], store: Store) -> asyncio.Future[T]:
        task = asyncio.ensure_future(operation)
        # Nobody may await the task once its caller stops waiting: its outcome is retrieved
        # anyway, so that a failure is not reported as "never retrieved".
        task.add_done_callback(_retrieve)
        if store is Store.POSTGRES:
            self._relational.add(task)
            task.add_done_callback(self._relational.discard)
        return task

    async def end(self) -> None:
        """Wait for the relational calls still running, one store timeout at most, then
        cancel those left and let them unwind, which gives their connections back."""
        if not self._relational:
            return
        _, late = await asyncio.wait(set(self._relational), timeout=self._timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=self._timeout)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class StoreDownError(Exception):
    """The store is unavailable: the call failed as such, or was not made."""

    def __init__(self, store: Store) -> None:
        super().__init__(f"{store.value} is unavailable")
        self.store = store


class Circuit:
    """One store's circuit, shared by every request of a process.

    It opens after ``FAILURES_TO_OPEN`` calls in a row failed as the store being down, and
    at once when the store has answered nothing for ``HUNG_AFTER`` seconds while a read
    waited for it: a hung store (or one a driver waits for to come back) would otherwise
    hold every read that needs it for the whole store timeout, and with them the
    operations they are part of. Reads waiting when it opens stop waiting.
    """

    def __init__(self, store: Store, calls: StoreCalls) -> None:
        self.store = store
        self._calls = calls
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False
        self._last_answer = monotonic()
        self._opened: asyncio.Future[None] | None = None
        self._outage = Outage(
            logger,
            began=f"{store.value} is unavailable: its fields fail at once until it answers",
            ended=f"{store.value} answers again",
        )

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    async def call(self, operation: Awaitable[T], limit: float | None) -> T:
        """``operation``'s outcome; ``StoreDownError`` if the store is down or did not
        answer within ``limit`` seconds (a read). Without a limit (a write), the call is
        waited for to its end, lest a write reported as failed commit afterwards. The call
        is never cancelled from here (see ``completed_within``)."""
        probe = self.is_open
        if not self._admits():
            if asyncio.iscoroutine(operation):
                operation.close()  # never started: nothing to wait for
            raise StoreDownError(self.store)
        task = self._calls.start(operation, self.store)
        try:
            if limit is None:
                await asyncio.wait({task})
            else:
                await self._wait(task, limit)
        except asyncio.CancelledError:
            if probe:
                self._probing = False  # the caller left: its call says nothing of the store
            raise
        error = task.exception()
        if error is not None and unavailable(self.store, error):
            self.failed(error)
            raise StoreDownError(self.store) from error
        self._answered()
        return task.result()

    async def _wait(self, task: asyncio.Future[Any], limit: float) -> None:
        started = monotonic()
        hung_at = started + HUNG_AFTER
        given_up_at = started + limit
        opened = self._opened_signal()
        while not task.done():
            if opened.done():
                raise StoreDownError(self.store)  # another call found it down meanwhile
            # One reading of the clock decides both whether the store is hung and how long
            # to wait next: two readings, or a sum and a difference of the same ones, may
            # disagree by a rounding at the boundary, and the store is then never taken
            # as hung, the read waiting for the whole store timeout.
            now = monotonic()
            if now >= given_up_at:
                self.failed(TimeoutError(f"no answer within {limit:g}s"))
                raise StoreDownError(self.store)
            if now >= hung_at and self._last_answer < started:
                self._open(TimeoutError(f"nothing answered for {HUNG_AFTER:g}s"))
                raise StoreDownError(self.store)
            until = min(hung_at, given_up_at) if now < hung_at else given_up_at
            await asyncio.wait(
                {task, opened}, timeout=until - now, return_when=asyncio.FIRST_COMPLETED
            )

    def _admits(self) -> bool:
        """Always while the store answers; while it is down, one probe at a time once the
        circuit has been open long enough."""
        if self._open_until is None:
            return True
        if self._probing or monotonic() < self._open_until:
            return False
        self._probing = True
        return True

    def _answered(self) -> None:
        """It answered, with a value or a refusal."""
        self._failures = 0
        self._probing = False
        self._last_answer = monotonic()
        if self._open_until is not None:
            self._open_until = None
            self._outage.recovered()

    def failed(self, error: BaseException) -> None:
        """A call found the store down (this circuit's own, or a write across stores)."""
        self._failures += 1
        self._probing = False
        if self._open_until is not None or self._failures >= FAILURES_TO_OPEN:
            self._open(error)

    def _open(self, error: BaseException) -> None:
        self._probing = False
        self._open_until = monotonic() + OPEN_FOR
        self._outage.failed(error)
        if self._opened is not None and not self._opened.done():
            self._opened.set_result(None)
        self._opened = None

    def _opened_signal(self) -> asyncio.Future[None]:
        if self._opened is None:
            self._opened = asyncio.get_running_loop().create_future()
        return self._opened


class Circuits(dict[Store, Circuit]):
    """A circuit for each store."""

    def __init__(self, calls: StoreCalls) -> None:
        super().__init__({store: Circuit(store, calls) for store in Store})
