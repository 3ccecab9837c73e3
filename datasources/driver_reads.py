"""Reads handed to PostgreSQL's driver as compiled SQL.

For the few hundred rows of one level of a query, SQLAlchemy's execution path (an
execution context, a result with its row processors, the greenlet it runs in) costs the
gateway more CPU than asyncpg's own fetch. Under asyncpg, a read is compiled once per
shape of statement and sent on a connection of the same pool, and its rows are used as
the driver decodes them (they are indexed and sliced like SQLAlchemy's rows); on any other
driver it runs through SQLAlchemy like every other statement. Either way its failures are
SQLAlchemy's exceptions, so that a store that fails is reported the same whichever path
read it.

Two kinds of read: a ``DriverRead``, one statement whose only varying parts are named bind
parameters, compiled once (the lookups behind every level); and ``rows_of`` any SELECT,
compiled once per shape, the shape and its values taken apart by SQLAlchemy's own cache
key (pages and counts, whose conditions vary with the request).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from datasources import postgres_dialect
from datasources.explain import record_statement
from datasources.instrumentation import count_postgres_round_trip, note_command

DRIVER = "asyncpg"
# Shapes of statement kept compiled: a shape is fixed by the query's text, not its values.
MAX_SHAPES = 500
# What asyncpg raises when the connection, not the statement, failed: besides a server
# gone, refused or shutting down, a socket gone, or a connection whose server ended it
# while it sat in the pool (its protocol is left waiting for the end of an error the
# server sent unasked).
CONNECTION_FAILURES = (
    *postgres_dialect.CONNECTION_FAILURES,
    asyncpg.InternalClientError,
    OSError,
)

Rows = Sequence[Sequence[Any]]
# Any SELECT, whatever its columns.
AnySelect = Select[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    # The bind parameters in their positional order, each with its bind processor.
    parameters: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    # SQLAlchemy's compilation, which takes a statement's values out of its cache key.
    compilation: Any


class DriverRead:
    """A SELECT whose only varying parts are named bind parameters."""

    def __init__(self, statement: AnySelect) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    async def rows(self, engine: AsyncEngine, **parameters: Any) -> Rows:
        if engine.dialect.driver != DRIVER:
            return await _through_sqlalchemy(engine, self.statement, parameters)
        compiled = self._compiled.get(engine.dialect.name)
        if compiled is None:
            found = _compile(self.statement, engine.dialect, None)
            assert found is not None, "a lookup's statement renders no values at execution"
            compiled = self._compiled[engine.dialect.name] = found
        return await _fetch(engine, compiled, parameters)


_shapes: OrderedDict[tuple[str, Any], _Compiled | None] = OrderedDict()


async def rows_of(engine: AsyncEngine, statement: AnySelect) -> Rows:
    """The rows of ``statement``, compiled once per shape."""
    cache_key = statement._generate_cache_key() if engine.dialect.driver == DRIVER else None
    if cache_key is None:
        return await _through_sqlalchemy(engine, statement, None)
    shape = (engine.dialect.name, cache_key.key)
    if shape in _shapes:
        compiled = _shapes[shape]
        _shapes.move_to_end(shape)
    else:
        compiled = _shapes[shape] = _compile(statement, engine.dialect, cache_key)
        if len(_shapes) > MAX_SHAPES:
            _shapes.popitem(last=False)
    if compiled is None:
        return await _through_sqlalchemy(engine, statement, None)
    return await _fetch(engine, compiled, _extracted(compiled, cache_key))


def _compile(statement: AnySelect, dialect: Dialect, cache_key: Any) -> _Compiled | None:
    compilation = dialect.statement_compiler(dialect, statement, cache_key=cache_key)
    if compilation.post_compile_params or compilation.literal_execute_params:
        # Rendered again at each execution (an IN list's values): SQLAlchemy's part.
        return None
    processors = compilation._bind_processors
    parameters: list[tuple[str, Callable[[Any], Any] | None]] = []
    for name in compilation.positiontup or ():
        process = processors.get(name)
        if not (process is None or callable(process)):
            return None  # a processor per element of a tuple: SQLAlchemy's part too
        parameters.append((name, process))
    return _Compiled(str(compilation), tuple(parameters), compilation)


def _extracted(compiled: _Compiled, cache_key: Any) -> dict[str, Any]:
    """The values of a statement of ``compiled``'s shape, from its own cache key."""
    values: dict[str, Any] = compiled.compilation.construct_params(
        extracted_parameters=cache_key.bindparams, escape_names=False
    )
    return values


async def _fetch(engine: AsyncEngine, compiled: _Compiled, parameters: dict[str, Any]) -> Rows:
    arguments = [
        parameters[name] if process is None else process(parameters[name])
        for name, process in compiled.parameters
    ]
    # From the engine's pool itself: the same connections, checked out and in by the
    # pool's own rules, without the engine connection around them (half the CPU).
    pooled = await greenlet_spawn(engine.sync_engine.pool.connect)
    driver: asyncpg.Connection = pooled.driver_connection
    count_postgres_round_trip()
    note_command(compiled.sql)
    record_statement(compiled.sql, arguments)
    invalidated = False
    try:
        rows: list[Sequence[Any]] = await driver.fetch(compiled.sql, *arguments)
    except CONNECTION_FAILURES as error:
        # Never back into the pool: it may be closed, or in a state no statement can
        # follow. Invalidating it returns its slot to the pool, to reconnect.
        invalidated = True
        await greenlet_spawn(pooled.invalidate, error)
        raise OperationalError(compiled.sql, arguments, error) from error
    except asyncpg.PostgresError as error:
        raise DBAPIError(compiled.sql, arguments, error) from error
    finally:
        if not invalidated:
            await greenlet_spawn(pooled.close)
    return rows


async def _through_sqlalchemy(
    engine: AsyncEngine, statement: AnySelect, parameters: dict[str, Any] | None
) -> Rows:
    async with engine.connect() as connection:
        rows: Rows = (await connection.execute(statement, parameters)).all()
        return rows
