"""How MySQL and MariaDB do what each backend does its own way (see datasources/dialects.py).

Key lists are a placeholder per key; full-text search is a FULLTEXT index on the reports'
titles and abstracts (revision 0010), searched in boolean mode; upserts are
``ON DUPLICATE KEY UPDATE``. Each session runs in UTC and at READ COMMITTED, as the
gateway's PostgreSQL sessions do: a write sees the rows committed before each of its
statements, and locks what it reads ``FOR UPDATE``.
"""

from __future__ import annotations

import copy
import re
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncmy
import asyncmy.errors
import orjson
from sqlalchemy import (
    BigInteger,
    PrimaryKeyConstraint,
    String,
    Table,
    TypeDecorator,
    bindparam,
    event,
    type_coerce,
)
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.engine import URL, Dialect, ExceptionContext
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import DDLCompiler, SQLCompiler

from datasources.driver_fetch import DriverFetch, Rows
from datasources.portable_sql import (
    EqualsAny,
    MatchesSearch,
    counters_of_existing_reports,
    overwritten_columns,
    web_search,
)

# What asyncmy raises itself, outside a statement (as a connection is set up for a
# checkout): the connection is gone or was refused.
CONNECTION_FAILURES = (asyncmy.errors.OperationalError, asyncmy.errors.InterfaceError)


@compiles(PrimaryKeyConstraint, "mysql")
def _primary_key(constraint: PrimaryKeyConstraint, compiler: DDLCompiler, **kw: Any) -> str:
    """The primary key without the name the migrations give it (``pk_<table>``): MySQL
    calls every primary key PRIMARY and answers any other name with a warning, which the
    driver fetches in a round trip of its own and logs, a line for each table."""
    unnamed = copy.copy(constraint)
    unnamed.name = None
    return compiler.visit_primary_key_constraint(unnamed, **kw)


@compiles(EqualsAny, "mysql")
def _equals_any(element: EqualsAny, compiler: SQLCompiler, **kw: Any) -> str:
    # The keys as a list of placeholders, one per key, expanded as the statement runs: the
    # optimizer reads such a list through the column's index. A list unpacked from one
    # JSON parameter (JSON_TABLE) it joins as a table of unknown size, and it read the
    # whole link table rather than look the keys up. Its text then varies with the number
    # of keys, which costs nothing here: the server keeps no plan of a statement sent as
    # text. Named as the keys are, the list takes their value wherever the compiled
    # statement is used again.
    keys = element.keys
    listed = bindparam(keys.key, keys.value, type_=BigInteger(), expanding=True)
    return str(compiler.process(element.column.in_(listed), **kw))


class BooleanSearch(TypeDecorator[str]):
    """A search in web-search syntax, sent as the boolean-mode search it means."""

    impl = String()
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else boolean_query(value)


@compiles(MatchesSearch, "mysql")
def _matches_search(element: MatchesSearch, compiler: SQLCompiler, **kw: Any) -> str:
    columns = ", ".join(compiler.process(c, **kw) for c in (element.title, element.abstract))
    search = compiler.process(type_coerce(element.search, BooleanSearch()), **kw)
    # A relevance, above zero where the search matches.
    return f"MATCH ({columns}) AGAINST ({search} IN BOOLEAN MODE) > 0"


def boolean_query(search: str) -> str:
    """A search in web-search syntax (see ``WebSearch``) as a boolean-mode search. Every
    term is quoted, so that the mode's own operators in a search are only words (a double
    quote inside a term cannot be written, and is a space)."""
    parsed = web_search(search)
    quoted = [[_quoted(term) for term in group] for group in parsed.alternatives]
    if not quoted:
        return ""
    required = [" ".join(f"+{term}" for term in group) for group in quoted]
    # One group's terms are all required; of several groups, one at least.
    alternatives = required[0] if len(required) == 1 else " ".join(f"({g})" for g in required)
    return " ".join([alternatives, *(f"-{_quoted(term)}" for term in parsed.excluded)])


def _quoted(term: str) -> str:
    return '"' + term.replace('"', " ").strip() + '"'


async def upsert_rows(
    connection: AsyncConnection, *, table: Table, rows: Sequence[dict[str, Any]], keys: list[str]
) -> None:
    if not rows:
        return
    statement = mysql_insert(table)
    updated = {name: statement.inserted[name] for name in overwritten_columns(table, rows, keys)}
    await connection.execute(
        statement.on_duplicate_key_update(updated) if updated else statement.prefix_with("IGNORE"),
        list(rows),
    )


async def advance_sequence(connection: AsyncConnection, *, table: Table) -> None:
    """Nothing to do: InnoDB moves a table's counter past every id inserted."""


upsert_existing_counters = counters_of_existing_reports(upsert_rows)


# The TLS options of a URL: MySQL's client spells them with hyphens (``ssl-mode``,
# ``ssl-ca``), SQLAlchemy with underscores; ``ssl_mode`` is the client's alone.
_TLS_OPTIONS = (
    "ssl_mode", "ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_cipher", "ssl_check_hostname",
)  # fmt: skip


def connection(url: URL, timeout: float) -> tuple[URL, dict[str, Any]]:
    """``ssl_mode``, as MySQL's own client reads it, with the files and ciphers it names:
    asyncmy takes no such argument, and SQLAlchemy would pass it on. Without it,
    SQLAlchemy's own options (``ssl_ca``...) check the server's certificate and name."""
    arguments: dict[str, Any] = {"connect_timeout": max(1, round(timeout))}
    spelled = {name: name.replace("-", "_") for name in url.query}
    tls = {
        spelled[name]: value if isinstance(value, str) else value[-1]
        for name, value in url.query.items()
        if spelled[name] in _TLS_OPTIONS
    }
    url = url.difference_update_query([name for name in url.query if spelled[name] in tls])
    if "ssl_mode" not in tls:
        return url.update_query_dict(tls), arguments
    if "ssl_check_hostname" in tls:
        raise ValueError("ssl_check_hostname: ssl_mode says whether the server's name is checked")
    context = _tls_context(tls.pop("ssl_mode"), tls)
    if context is not None:
        arguments["ssl"] = context
    return url, arguments


def _tls_context(mode: str, files: dict[str, str]) -> ssl.SSLContext | None:
    """A context for ``mode``, with the ``files`` and cipher list of the other options;
    None for no TLS. ``REQUIRED`` encrypts without checking the
    certificate unless given a CA to check it against, as MySQL's client does;
    ``VERIFY_CA`` checks it; ``VERIFY_IDENTITY`` checks it and the server's name."""
    named = mode.upper().replace("-", "_")
    if named == "DISABLED":
        return None
    if named == "PREFERRED":
        raise ValueError(
            "ssl_mode=PREFERRED: the driver cannot fall back to an unencrypted connection;"
            " say REQUIRED (or DISABLED)"
        )
    if named not in ("REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"):
        raise ValueError(f"ssl_mode={mode!r}: DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY")
    authority = files.get("ssl_ca") or files.get("ssl_capath")
    try:
        context = ssl.create_default_context(
            cafile=files.get("ssl_ca"), capath=files.get("ssl_capath")
        )
        if "ssl_cert" in files:
            context.load_cert_chain(files["ssl_cert"], files.get("ssl_key"))
        if "ssl_cipher" in files:
            context.set_ciphers(files["ssl_cipher"])
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"ssl_mode={mode}: {error}") from None
    context.check_hostname = named == "VERIFY_IDENTITY"
    if named == "REQUIRED" and authority is None:
        context.verify_mode = ssl.CERT_NONE
    return context


# Refusals of a row that the driver reports as operational errors, which the gateway takes
# for the server failing: a check or NOT NULL constraint, a column without a default, a
# value out of range, too long or of the wrong type; and a deadlock, for which InnoDB rolls
# back one of two colliding writes (two retries of one idempotent write, say), a conflict
# the client may retry, as PostgreSQL's unique violation is in the same race.
REFUSALS: dict[int, type[DBAPIError]] = {
    1213: IntegrityError,
    1048: IntegrityError,
    1364: IntegrityError,
    3819: IntegrityError,
    4025: IntegrityError,
    1264: DataError,
    1366: DataError,
    1406: DataError,
}


def configure(engine: AsyncEngine) -> None:
    """Sessions in UTC at READ COMMITTED; a refused row raised as the refusal it is."""

    def on_connect(connection: Any, _: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("SET time_zone = '+00:00'")
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cursor.close()

    def on_error(context: ExceptionContext) -> DBAPIError | None:
        original = context.original_exception
        code = original.args[0] if original.args else None
        refusal = REFUSALS.get(code) if isinstance(code, int) else None
        if refusal is None:
            return None
        return refusal(context.statement, context.parameters, original)

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "handle_error", on_error)


async def _fetch(connection: asyncmy.Connection, sql: str, arguments: Sequence[Any]) -> Rows:
    async with connection.cursor() as cursor:
        await cursor.execute(sql, arguments)
        return cast("Rows", await cursor.fetchall())


# The codes of a connection gone or lost, as SQLAlchemy reads them.
LOST_CONNECTION = frozenset({1927, 2006, 2013, 2014, 2045, 2055, 4031})


def _read_failure(error: BaseException) -> tuple[type[DBAPIError], bool] | None:
    if isinstance(error, OSError | asyncmy.errors.InterfaceError):
        return OperationalError, True
    if isinstance(error, asyncmy.errors.OperationalError):
        return OperationalError, bool(error.args) and error.args[0] in LOST_CONNECTION
    if isinstance(error, asyncmy.errors.Error):
        return DBAPIError, False
    return None


# asyncmy gives booleans as the integers MySQL stores them as.
DRIVER_FETCH = DriverFetch(_fetch, _read_failure, decodes_columns=False)


def reader(engine: AsyncEngine, apart: Callable[..., AsyncEngine]) -> AsyncEngine:
    """A pool of its own, whose connections stay in autocommit: a SELECT outside it opens
    a transaction, which the pool then rolls back as the connection comes back (a round
    trip per read), and switching a pooled connection to autocommit and back is a statement
    each way. No statement of a reader begins a transaction, so there is none to end when
    one comes back: the pool sends nothing then (on the nested query, 13% more requests a
    second). Nor does a read through SQLAlchemy, which otherwise ends each use of a
    connection with the driver's ROLLBACK, autocommit or not: a round trip for nothing."""
    return apart(
        isolation_level="AUTOCOMMIT", pool_reset_on_return=None, skip_autocommit_rollback=True
    )


@asynccontextmanager
async def migrating(connection: AsyncConnection) -> AsyncIterator[None]:
    """Nothing to set: MySQL alters tables in place (each change commits by itself)."""
    yield


async def explain(connection: AsyncConnection, statement: str, parameters: Sequence[Any]) -> Any:
    """``EXPLAIN FORMAT=JSON``'s document (the statement does not run; rows are the
    optimizer's estimates)."""
    explained = await connection.exec_driver_sql(
        f"EXPLAIN FORMAT=JSON {statement}", tuple(parameters)
    )
    return plan_document(explained.scalar_one())


# One member of the document per line, as MariaDB writes it: its name, then a text value.
_TEXT_MEMBER = re.compile(r'^(\s*"[^"]+": ")(.*)(",?)$', re.MULTILINE)


def plan_document(explained: str) -> Any:
    """The plan ``EXPLAIN FORMAT=JSON`` wrote. MariaDB writes the text of a condition as
    it is, unescaped: a boolean-mode search's phrases bring their double quotes, and its
    SQL literals their own backslashes. Such a document is read again with each text
    member's value escaped as JSON escapes text."""
    try:
        return orjson.loads(explained)
    except orjson.JSONDecodeError:
        return orjson.loads(_TEXT_MEMBER.sub(_escaped_member, explained))


def _escaped_member(member: re.Match[str]) -> str:
    name, value, end = member.groups()
    return name + orjson.dumps(value).decode()[1:-1] + end


def plan_hints(plan: Any, worth_an_index: int) -> Iterator[str]:
    for table in _tables(plan):
        rows = table.get("rows", 0)
        if table.get("access_type") == "ALL" and rows > worth_an_index:
            condition = table.get("attached_condition")
            why = f" (condition: {condition})" if condition else ""
            yield (
                f"full scan of {table.get('table_name', '?')}, about {rows} rows{why}: an "
                "index on the filtered or joined columns would serve it"
            )


def _tables(value: Any) -> Iterator[Mapping[str, Any]]:
    """Every table access of a plan, however deep its subqueries nest them."""
    if isinstance(value, Mapping):
        if "access_type" in value:
            yield value
        for child in value.values():
            yield from _tables(child)
    elif isinstance(value, list):
        for child in value:
            yield from _tables(child)
