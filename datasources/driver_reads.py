"""Reads compiled once and handed to PostgreSQL's driver as they are.

The reads behind every level of a query (rows by id, a report's authors, its technologies)
are the same statement each time with another array of keys. For a few hundred rows,
SQLAlchemy's execution path (a cache key, an execution context, a result with its row
processors) costs the gateway more CPU than asyncpg's own fetch. Under asyncpg such a
statement is compiled once, sent on a connection of the same pool, and its rows are used
as the driver decodes them; on any other driver it runs through SQLAlchemy like every other
statement. Either way its failures are SQLAlchemy's exceptions, so that a store that fails
is reported the same whichever path read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources.instrumentation import count_postgres_round_trip

# What asyncpg raises when the connection, not the statement, failed: a server shutting
# down or restarting, a socket gone.
CONNECTION_FAILURES = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    OSError,
)


class DriverRead:
    """A SELECT whose only varying parts are named bind parameters."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...]]] = {}

    def _compile(self, dialect: Dialect) -> tuple[str, tuple[str, ...]]:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            names = tuple(compiled.positiontup or ())
            found = self._compiled[dialect.name] = (str(compiled), names)
        return found

    async def rows(self, engine: AsyncEngine, **parameters: Any) -> Sequence[Sequence[Any]]:
        if engine.dialect.driver != "asyncpg":
            async with engine.connect() as connection:
                processed: Sequence[Sequence[Any]] = (
                    await connection.execute(self.statement, parameters)
                ).all()
                return processed
        sql, names = self._compile(engine.dialect)
        arguments = [parameters[name] for name in names]
        async with engine.connect() as connection:
            pooled = await connection.get_raw_connection()
            driver: asyncpg.Connection = pooled.driver_connection
            count_postgres_round_trip()
            try:
                rows: list[Sequence[Any]] = await driver.fetch(sql, *arguments)
            except CONNECTION_FAILURES as error:
                if driver.is_closed():
                    await connection.invalidate(error)
                raise OperationalError(sql, arguments, error) from error
            except asyncpg.PostgresError as error:
                raise DBAPIError(sql, arguments, error) from error
            return rows
