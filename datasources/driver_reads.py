"""Reads handed to the backend's driver as compiled SQL.

For the few hundred rows of one level of a query, SQLAlchemy's execution path (an
execution context, a result with its row processors, the greenlet it runs in) costs the
gateway more CPU than the driver's own fetch; under aiosqlite, its cursor also hands four
calls per statement to the connection's thread and back, where the driver's fetch hands
over one. A read is compiled once per
shape of statement and sent on a connection of the same pool (datasources/driver_fetch.py
says how each driver runs it); where the driver gives a column otherwise than its type in
SQLAlchemy would (SQLite's dates are text), that type's own processor converts it. A
statement with a placeholder per value of a list (MySQL's lists of keys) is written out
for each read's list, by SQLAlchemy's compilation as its own execution would. Its
failures are SQLAlchemy's exceptions, so that a store that fails is reported the same
whichever path read it.

Two kinds of read: a ``DriverRead``, one statement whose only varying parts are named bind
parameters, compiled once (the lookups behind every level); and ``rows_of`` any SELECT,
compiled once per shape, the shape and its values taken apart by SQLAlchemy's own cache
key (pages and counts, whose conditions vary with the request).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from datasources.dialects import backend_of
from datasources.driver_fetch import DriverFetch, Rows
from datasources.explain import record_statement
from datasources.instrumentation import count_postgres_round_trip, note_command

# Shapes of statement kept compiled: a shape is fixed by the query's text, not its values.
MAX_SHAPES = 500

# Any SELECT, whatever its columns.
AnySelect = Select[*tuple[Any, ...]]
Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    # The bind parameters in their positional order, each with its bind processor.
    parameters: tuple[tuple[str, Processor | None], ...]
    # SQLAlchemy's compilation, which takes a statement's values out of its cache key.
    compilation: Any
    # The columns the driver does not give as their types would, by position, each with
    # its type's processor.
    columns: tuple[tuple[int, Processor], ...]
    # Whether the SQL has a placeholder per value of a list: written out at each read.
    expands: bool


class DriverRead:
    """A SELECT whose only varying parts are named bind parameters."""

    def __init__(self, statement: AnySelect) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled | None] = {}

    async def rows(self, engine: AsyncEngine, **parameters: Any) -> Rows:
        driver = backend_of(engine).DRIVER_FETCH
        name = engine.dialect.name
        if name in self._compiled:
            compiled = self._compiled[name]
        else:
            compiled = self._compiled[name] = _compile(self.statement, engine.dialect, None, driver)
        if compiled is None:
            return await _through_sqlalchemy(engine, self.statement, parameters)
        return await _fetch(engine, driver, compiled, parameters)


_shapes: OrderedDict[tuple[str, Any], _Compiled | None] = OrderedDict()


async def rows_of(engine: AsyncEngine, statement: AnySelect) -> Rows:
    """The rows of ``statement``, compiled once per shape."""
    cache_key = statement._generate_cache_key()
    if cache_key is None:
        return await _through_sqlalchemy(engine, statement, None)
    driver = backend_of(engine).DRIVER_FETCH
    shape = (engine.dialect.name, cache_key.key)
    if shape in _shapes:
        compiled = _shapes[shape]
        _shapes.move_to_end(shape)
    else:
        compiled = _shapes[shape] = _compile(statement, engine.dialect, cache_key, driver)
        if len(_shapes) > MAX_SHAPES:
            _shapes.popitem(last=False)
    if compiled is None:
        return await _through_sqlalchemy(engine, statement, None)
    return await _fetch(engine, driver, compiled, _extracted(compiled, cache_key))


def _compile(
    statement: AnySelect, dialect: Dialect, cache_key: Any, driver: DriverFetch
) -> _Compiled | None:
    compilation = dialect.statement_compiler(dialect, statement, cache_key=cache_key)
    if compilation.literal_execute_params:
        # Values written into the SQL itself at each execution: SQLAlchemy's part.
        return None
    processors = compilation._bind_processors
    parameters: list[tuple[str, Processor | None]] = []
    for name in compilation.positiontup or ():
        process = processors.get(name)
        if not (process is None or callable(process)):
            return None  # a processor per element of a tuple: SQLAlchemy's part too
        parameters.append((name, process))
    columns: list[tuple[int, Processor]] = []
    if not driver.decodes_columns:
        for position, column in enumerate(compilation._result_columns):
            process = column.type._cached_result_processor(dialect, None)
            if process is not None:
                columns.append((position, process))
    expands = bool(compilation.post_compile_params)
    return _Compiled(str(compilation), tuple(parameters), compilation, tuple(columns), expands)


def _extracted(compiled: _Compiled, cache_key: Any) -> dict[str, Any]:
    """The values of a statement of ``compiled``'s shape, from its own cache key."""
    values: dict[str, Any] = compiled.compilation.construct_params(
        extracted_parameters=cache_key.bindparams, escape_names=False
    )
    return values


async def _fetch(
    engine: AsyncEngine, driver: DriverFetch, compiled: _Compiled, parameters: dict[str, Any]
) -> Rows:
    sql, arguments = _written(compiled, parameters)
    # From the engine's pool itself: the same connections, checked out and in by the
    # pool's own rules, without the engine connection around them (half the CPU).
    pooled = await greenlet_spawn(engine.sync_engine.pool.connect)
    count_postgres_round_trip()
    note_command(sql)
    record_statement(sql, arguments)
    invalidated = False
    try:
        rows = await driver.fetch(pooled.driver_connection, sql, arguments)
    except Exception as error:
        failure = driver.failure(error)
        if failure is None:
            raise
        raised, invalidated = failure
        if invalidated:
            # Never back into the pool: it may be closed, or in a state no statement can
            # follow. Invalidating it returns its slot to the pool, to reconnect.
            await greenlet_spawn(pooled.invalidate, error)
        raise raised(sql, arguments, error, connection_invalidated=invalidated) from error
    finally:
        if not invalidated:
            await greenlet_spawn(pooled.close)
    return _decoded(rows, compiled.columns) if compiled.columns else rows


def _written(compiled: _Compiled, values: dict[str, Any]) -> tuple[str, list[Any]]:
    """The SQL of a read and its positional values, each through its bind processor."""
    if not compiled.expands:
        return compiled.sql, [
            values[name] if process is None else process(values[name])
            for name, process in compiled.parameters
        ]
    written = compiled.compilation.construct_expanded_state(values, escape_names=False)
    # Those of the values written out, with those of the others as compiled.
    processors = {**compiled.compilation._bind_processors, **written.processors}
    expanded = written.parameters
    return written.statement, [
        processors[name](expanded[name]) if name in processors else expanded[name]
        for name in written.positiontup or ()
    ]


def _decoded(rows: Rows, columns: tuple[tuple[int, Processor], ...]) -> Rows:
    decoded = []
    for row in rows:
        values = list(row)
        for position, process in columns:
            values[position] = process(values[position])
        decoded.append(values)
    return decoded


async def _through_sqlalchemy(
    engine: AsyncEngine, statement: AnySelect, parameters: dict[str, Any] | None
) -> Rows:
    async with engine.connect() as connection:
        rows: Rows = (await connection.execute(statement, parameters)).all()
        return rows
