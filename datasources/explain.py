"""What an operation sent to each store, recorded when it is explained, and each store's own
account of it (``EXPLAIN``, MongoDB's ``explain``).

Recorded per store call, not per statement: a call (one batch of a level, one root read)
is what the executors decide on, so it carries the source that made it, its planner level,
its time and its rows, and the statements or commands its driver sent sit under it. The
drivers' own hooks see what was sent (SQLAlchemy's ``before_cursor_execute``, the reads
handed to the driver directly, PyMongo's command listener, the Redis connection's packing of
commands), with its values, so what is explained afterwards is what ran.

Nothing is recorded unless an operation is explained: the loaders hold no ``Recording``
then, and each hook costs one look-up of ``current_step``, which is unbound.

The stores explain afterwards, once the operation has answered, so that explaining does
not change the times it reports: each SELECT runs again under ``EXPLAIN (ANALYZE,
BUFFERS)`` in a transaction that is rolled back, each MongoDB read under ``explain`` with
``executionStats``. Redis has no explain: its commands are listed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, TypeVar

from pymongo import monitoring
from pymongo.asynchronous.database import AsyncDatabase
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources.dialects import backend_of

V = TypeVar("V")

POSTGRES = "postgres"
MONGODB = "mongodb"
REDIS = "redis"
# The MongoDB commands that read with a filter or a pipeline, and so have a plan.
EXPLAINABLE_COMMANDS = frozenset({"find", "aggregate", "count", "distinct"})
# What a driver adds to every command (sessions, cluster time, read preference): not part of
# what the operation asked, and refused inside an explain.
DRIVER_FIELDS = frozenset({"lsid", "txnNumber", "autocommit", "startTransaction", "signature"})


@dataclass
class Sent:
    """One statement or command a driver sent: SQL with its parameters, a MongoDB command
    document, or a Redis command with its arguments."""

    store: str
    text: str
    arguments: Any
    database: str | None = None


@dataclass
class Step:
    """One store call of the operation."""

    store: str
    source: str
    # The planner's level (its root fields are 1); None on Strawberry's executor.
    level: int | None
    keys: int | None
    # Seconds since the operation began.
    started: float
    seconds: float = 0.0
    rows: int | None = None
    failed: bool = False
    sent: list[Sent] = field(default_factory=list)


current_step: ContextVar[Step | None] = ContextVar("explained_step", default=None)


class Recording:
    """The store calls of one explained operation, in the order they started."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        # The level the planner fetches (see planner/execute.py).
        self.level: int | None = None
        self._began = perf_counter()

    async def step(self, store: str, source: str, keys: int | None, call: Awaitable[V]) -> V:
        """``call``'s value, with what it sent recorded in a step of its own. The step is
        bound before the call starts: the task a store call runs in (see core/stores.py)
        copies it, as do the drivers' callbacks."""
        began = perf_counter()
        step = Step(store, source, self.level, keys, began - self._began)
        self.steps.append(step)
        token = current_step.set(step)
        try:
            value = await call
        except BaseException:
            step.failed = True
            raise
        finally:
            step.seconds = perf_counter() - began
            current_step.reset(token)
        step.rows = rows_in(value)
        return value


def rows_in(value: Any) -> int:
    """What a call found: each key's values for a batch, or a root read's."""
    if isinstance(value, list):
        return sum(_found(item) for item in value)
    return _found(value)


def _found(value: Any) -> int:
    if value is None:
        return 0
    records = getattr(value, "records", None)  # a page (datasources/keyset.py)
    if isinstance(records, list):
        return len(records)
    if isinstance(value, list):  # a source of many's values for one key
        return len(value)
    return 1


def record_statement(statement: str, parameters: Sequence[Any] | None) -> None:
    """A relational statement, as the driver got it (with its placeholders), with its
    values."""
    step = current_step.get()
    if step is not None:
        step.sent.append(Sent(POSTGRES, statement, list(parameters or ())))


def _recorded_statement(_: Any, __: Any, statement: str, parameters: Any, *___: Any) -> None:
    record_statement(statement, parameters)


def record_statements(engine: AsyncEngine) -> None:
    """Record what SQLAlchemy sends through ``engine``; reads sent to the driver directly
    record themselves (datasources/driver_reads.py)."""
    event.listen(engine.sync_engine, "before_cursor_execute", _recorded_statement)


class CommandRecorder(monitoring.CommandListener):
    """Records each MongoDB command of an explained store call, filters and all."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        step = current_step.get()
        if step is not None:
            command = {
                name: value
                for name, value in event.command.items()
                if not name.startswith("$") and name not in DRIVER_FIELDS
            }
            step.sent.append(Sent(MONGODB, event.command_name, command, event.database_name))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return


def record_redis_command(arguments: Sequence[Any]) -> None:
    """A Redis command and its arguments, as the connection packs it (a pipeline packs
    each of its commands)."""
    step = current_step.get()
    if step is not None and arguments:
        words = [_text(argument) for argument in arguments]
        step.sent.append(Sent(REDIS, words[0].upper(), words[1:]))


def _text(argument: Any) -> str:
    if isinstance(argument, (bytes, bytearray, memoryview)):
        return bytes(argument).decode("utf-8", "backslashreplace")
    return str(argument)


def is_select(statement: str) -> bool:
    return statement.lstrip().split(None, 1)[0].upper() in ("SELECT", "WITH")


async def explain_statement(
    *, engine: AsyncEngine, statement: str, parameters: Sequence[Any]
) -> Any:
    """The backend's plan of a SELECT with its parameters, in a transaction that is rolled
    back (PostgreSQL's runs the statement again)."""
    async with engine.connect() as connection, connection.begin() as transaction:
        plan = await backend_of(engine).explain(connection, statement, parameters)
        await transaction.rollback()
    return plan


async def explain_command(
    *, database: AsyncDatabase[dict[str, Any]], command: Mapping[str, Any]
) -> dict[str, Any]:
    """MongoDB's account of a read command: its plan and what running it examined."""
    explained: dict[str, Any] = await database.command(
        {"explain": dict(command), "verbosity": "executionStats"}
    )
    return explained
