"""How SQLite does what each backend does its own way (see datasources/dialects.py).

Key lists are JSON arrays unpacked by ``json_each``; full-text search is an FTS5 table
over the reports' titles and abstracts, which triggers of the migrations keep in step
(revision 0009); upserts are ``ON CONFLICT``. SQLite has one writer at a time: the
connections wait for each other's writes (``busy_timeout``) instead of failing.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import aiosqlite
from sqlalchemy import Connection, String, Table, TypeDecorator, event, text, type_coerce
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from datasources.driver_fetch import DriverFetch, Rows
from datasources.portable_sql import (
    EarliestDate,
    EqualsAny,
    MatchesSearch,
    counters_of_existing_reports,
    upsert_on_conflict,
    web_search,
)

# The FTS5 table of revision 0009: the reports' title and abstract, by report id.
SEARCH_TABLE = "reports_search"


@compiles(EqualsAny, "sqlite")
def _equals_any(element: EqualsAny, compiler: SQLCompiler, **kw: Any) -> str:
    column, keys = compiler.process(element.column, **kw), compiler.process(element.keys, **kw)
    # Compiled fragments, placeholders among them: no value is ever written in.
    return f"{column} IN (SELECT value FROM json_each({keys}))"  # noqa: S608


@compiles(EarliestDate, "sqlite")
def _earliest_date(element: EarliestDate, compiler: SQLCompiler, **kw: Any) -> str:
    # Dates are ISO text in SQLite, which orders as the dates do.
    return "'0001-01-01'"


class SearchQuery(TypeDecorator[str]):
    """A search in web-search syntax, sent as the FTS5 query it means."""

    impl = String()
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else fts5_query(value)


@compiles(MatchesSearch, "sqlite")
def _matches_search(element: MatchesSearch, compiler: SQLCompiler, **kw: Any) -> str:
    report_id = compiler.process(element.title.table.c.id, **kw)
    search = compiler.process(type_coerce(element.search, SearchQuery()), **kw)
    matching = f"SELECT rowid FROM {SEARCH_TABLE} WHERE {SEARCH_TABLE} MATCH {search}"  # noqa: S608
    return f"{report_id} IN ({matching})"


def fts5_query(search: str) -> str:
    """A search in web-search syntax (see ``WebSearch``) as an FTS5 query. Every term is
    quoted, so that FTS5's own operators and syntax in a search are only words. A search
    of exclusions alone matches nothing: FTS5 has no query for "every row but"."""
    parsed = web_search(search)
    quoted = [[_quoted(term) for term in group] for group in parsed.alternatives]
    if not quoted:
        return '""'
    query = " OR ".join("(" + " AND ".join(group) + ")" for group in quoted)
    excluded = " OR ".join(_quoted(term) for term in parsed.excluded)
    return f"({query}) NOT ({excluded})" if excluded else query


def _quoted(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


upsert_rows = upsert_on_conflict(sqlite_insert)


async def advance_sequence(connection: AsyncConnection, *, table: Table) -> None:
    """Nothing to do: a new row's id is one past the largest in the table."""


upsert_existing_counters = counters_of_existing_reports(upsert_rows)


def connection(url: URL, timeout: float) -> tuple[URL, dict[str, Any]]:
    # How long a connection waits for another's write to end before it fails.
    return url, {"timeout": timeout}


def configure(engine: AsyncEngine) -> None:
    """Foreign keys enforced, a write-ahead log (readers go on while one connection
    writes), and transactions that begin when asked, not at the first write the driver
    sees: a transaction's reads are then of one state, and DDL is in its migration's
    transaction. A transaction takes the write lock as it begins (``IMMEDIATE``), so that
    writers queue for it (up to the timeout) rather than one failing when it turns from
    reading to writing after another wrote; reads outside a transaction (``AUTOCOMMIT``)
    begin none."""

    def on_connect(connection: Any, _: Any) -> None:
        connection.isolation_level = None
        cursor = connection.cursor()
        for pragma in ("foreign_keys = ON", "journal_mode = WAL", "synchronous = NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    def on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)


async def _fetch(connection: aiosqlite.Connection, sql: str, arguments: Sequence[Any]) -> Rows:
    # One call on the connection's thread for the statement and its rows, where
    # SQLAlchemy's cursor makes four: each is a hand-over to the thread and back.
    return cast("Rows", await connection.execute_fetchall(sql, arguments))


# What SQLite raises itself as a connection is set up: the file cannot be opened.
CONNECTION_FAILURES = (sqlite3.OperationalError,)
# What aiosqlite raises, as ValueError, once its connection's thread has stopped.
STOPPED = frozenset({"no active connection", "connection closed"})


def _read_failure(error: BaseException) -> tuple[type[DBAPIError], bool] | None:
    if isinstance(error, ValueError) and str(error).lower() in STOPPED:
        return OperationalError, True
    if isinstance(error, sqlite3.ProgrammingError) and "closed database" in str(error):
        return OperationalError, True
    if isinstance(error, sqlite3.OperationalError):
        return OperationalError, False
    if isinstance(error, sqlite3.Error):
        return DBAPIError, False
    return None


# SQLite gives dates and times as text and booleans as integers.
DRIVER_FETCH = DriverFetch(_fetch, _read_failure, decodes_columns=False)


READERS = 2


def reader(engine: AsyncEngine, apart: Callable[..., AsyncEngine]) -> AsyncEngine:
    """Reads outside a transaction, which take no lock (see configure), on a pool of their
    own of two connections. Each connection is a thread of the driver's, and the threads
    of a larger pool took turns at the interpreter's lock with the event loop and each
    other: with 4 to 32 requests at once, the nested query was answered 30% more often a
    second on two connections than on twenty (and as often as on one). Writes keep their
    larger pool, where they queue for the file's write lock: a write that reads as it
    goes then never waits for a connection that another write holds."""
    return apart(isolation_level="AUTOCOMMIT", pool_size=READERS)


@asynccontextmanager
async def migrating(connection: AsyncConnection) -> AsyncIterator[None]:
    """Foreign keys off while the migrations run, and checked after: SQLite changes a
    table by copying it anew, and dropping the old copy would otherwise delete (by
    cascade) every row that refers to it. The pragma is set on the driver's connection:
    inside a transaction it would do nothing."""
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    await driver.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
        broken = await (await driver.execute("PRAGMA foreign_key_check")).fetchall()
        if broken:
            raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
    finally:
        await driver.execute("PRAGMA foreign_keys = ON")


# A step of a query plan that reads a whole table ("SCAN reports"), not through an index
# ("SCAN reports USING INDEX …") nor a virtual table's own ("… VIRTUAL TABLE INDEX …").
_WHOLE_TABLE = re.compile(r"SCAN (\w+)$")


async def explain(connection: AsyncConnection, statement: str, parameters: Sequence[Any]) -> Any:
    """``EXPLAIN QUERY PLAN``'s steps (the statement does not run), and the rows of each
    table read whole, which the plan does not give."""
    result = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", tuple(parameters))
    # Each row: the step's id, its parent's, an unused column, what it does.
    rows: list[tuple[Any, ...]] = [tuple(row) for row in result]
    steps = [{"id": row[0], "parent": row[1], "detail": row[3]} for row in rows]
    tables = set(
        (await connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'"))
        .scalars()
        .all()
    )
    sizes: dict[str, int] = {}
    for step in steps:
        read = _WHOLE_TABLE.match(step["detail"])
        if read is not None and read.group(1) in tables:
            table = read.group(1)
            # A name the database itself lists as one of its tables.
            counted = text(f'SELECT count(*) FROM "{table}"')  # noqa: S608
            sizes[table] = int(await connection.scalar(counted))
    return {"queryPlan": steps, "wholeTables": sizes}


def plan_hints(plan: Any, worth_an_index: int) -> Iterator[str]:
    for table, rows in plan["wholeTables"].items():
        if rows > worth_an_index:
            yield (
                f"SCAN {table} read all its {rows} rows: an index on the filtered or joined "
                "columns would serve it"
            )
