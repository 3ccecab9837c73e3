"""How PostgreSQL does what each backend does its own way: full-text search, key lists,
upserts, sequences (see datasources/dialects.py)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import asyncpg.exceptions
import orjson
from sqlalchemy import (
    ColumnElement,
    Index,
    Integer,
    Table,
    any_,
    bindparam,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from datasources.driver_fetch import DriverFetch, Rows
from datasources.portable_sql import EqualsAny, MatchesSearch, upsert_on_conflict

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# What asyncpg raises itself when the connection failed: gone, refused, or the server
# shutting down or starting.
CONNECTION_FAILURES = (
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)
# And when a read sent to it directly finds its connection failed: besides those, a
# socket gone, or a connection whose server ended it while it sat in the pool (its
# protocol is left waiting for the end of an error the server sent unasked).
READ_CONNECTION_FAILURES = (*CONNECTION_FAILURES, asyncpg.InternalClientError, OSError)


async def _fetch(connection: asyncpg.Connection, sql: str, arguments: Sequence[Any]) -> Rows:
    rows: Rows = await connection.fetch(sql, *arguments)
    return rows


def _read_failure(error: BaseException) -> tuple[type[DBAPIError], bool] | None:
    if isinstance(error, READ_CONNECTION_FAILURES):
        return OperationalError, True
    if isinstance(error, asyncpg.PostgresError):
        return DBAPIError, False
    return None


# asyncpg decodes every type the gateway reads, time zones included.
DRIVER_FETCH = DriverFetch(_fetch, _read_failure, decodes_columns=True)

# English stemming; the index and the queries that must use it share this expression.
SEARCH_CONFIG = "english"


def search_document(title: ColumnElement[Any], abstract: ColumnElement[Any]) -> ColumnElement[Any]:
    return func.to_tsvector(
        # text(), not literal_column(): an Index finds its table through the first column
        # it meets in the expression, and a literal column has none.
        text(f"'{SEARCH_CONFIG}'::regconfig"),
        func.coalesce(title, "") + " " + func.coalesce(abstract, ""),
    )


def search_index(name: str, title: ColumnElement[Any], abstract: ColumnElement[Any]) -> Index:
    return Index(name, search_document(title, abstract), postgresql_using="gin")


# Insert rows, or overwrite the existing ones with the same key columns.
upsert_rows = upsert_on_conflict(postgres_insert)


async def advance_sequence(connection: AsyncConnection, *, table: Table) -> None:
    """Move an id sequence past rows inserted with explicit ids."""
    await connection.execute(
        select(
            func.setval(
                func.pg_get_serial_sequence(table.name, "id"),
                select(func.coalesce(func.max(table.c.id), 0) + 1).scalar_subquery(),
                False,
            )
        )
    )


async def create_database_from_template(
    connection: AsyncConnection, *, name: str, template: str
) -> None:
    await connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))


# The options of a URL that SQLAlchemy reads itself (several hosts, its statement cache) or
# hands to asyncpg as arguments it takes as written.
_READ_BY_SQLALCHEMY = frozenset(
    {"host", "port", "prepared_statement_cache_size", "ssl", "servicefile"}
)
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq's options for what asyncpg does its own way (keeping the connection alive, naming
# the server to TLS), left unread whatever their value; and those left unread at the
# values that ask for nothing (libpq's defaults among them).
_LEFT = frozenset(
    {
        "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
        "tcp_user_timeout", "sslsni", "sslcompression", "fallback_application_name",
    }
)  # fmt: skip
_LEFT_AT = {
    "channel_binding": ("disable", "prefer"),
    "gssencmode": ("disable", "prefer"),
    "sslcertmode": ("disable", "allow"),
    "load_balance_hosts": ("disable",),
}
# Options that asyncpg cannot honour, or that the gateway sets itself: each would be a
# requirement dropped without a word.
_REFUSED = {
    "require_auth": "the driver cannot restrict how the server authenticates it",
    "requirepeer": "the driver cannot check the server's user on a Unix socket",
    "hostaddr": "name the server's address as the host",
    "sslcrldir": "give the revocation list as one file, sslcrl",
    "gssdelegation": "the driver does not delegate GSS credentials",
    "replication": "the gateway does not stream replication",
    "requiressl": "say sslmode=require",
    "direct_tls": "say sslnegotiation=direct",
    "timeout": "GATEWAY_STORE_TIMEOUT sets it",
    "command_timeout": "GATEWAY_STORE_TIMEOUT sets it",
}


def connection(url: URL, timeout: float) -> tuple[URL, dict[str, Any]]:
    """The URL's options as libpq reads them (``sslmode``, ``sslrootcert``,
    ``application_name``, ``target_session_attrs``...), as PostgreSQL's hosting platforms
    hand them out: asyncpg reads those from a DSN only, and SQLAlchemy would pass them as
    arguments that asyncpg refuses. Options libpq does not know are sent to the server as
    settings, as asyncpg does with a DSN's. ValueError for an option the driver cannot
    honour, or a value it cannot read."""
    arguments: dict[str, Any] = {
        "timeout": timeout,
        "command_timeout": timeout,
        # Timestamps are read as text (see configure): in UTC, as the API gives them.
        "server_settings": {"timezone": "UTC"},
    }
    libpq = {
        name: value if isinstance(value, str) else value[-1]
        for name, value in url.query.items()
        if name not in _READ_BY_SQLALCHEMY
    }
    for name, value in list(libpq.items()):
        if name in _REFUSED:
            raise ValueError(f"{name}: not supported ({_REFUSED[name]})")
        if name in _LEFT_AT and value not in _LEFT_AT[name]:
            raise ValueError(f"{name}={value}: not supported by the driver (asyncpg)")
        if name in _LEFT or name in _LEFT_AT:
            del libpq[name]
    if libpq.get("sslmode", "prefer") not in SSL_MODES:
        raise ValueError(f"sslmode={libpq['sslmode']!r}: one of {', '.join(SSL_MODES)}")
    if libpq.get("sslrootcert") == "system":
        arguments["ssl"] = _system_authorities(libpq.pop("sslmode", "verify-full"))
        del libpq["sslrootcert"]
    # libpq's one option that asyncpg takes by another name.
    if "connect_timeout" in libpq:
        arguments["timeout"] = _connect_timeout(libpq.pop("connect_timeout"), timeout)
    if libpq:
        # No host in the DSN: the arguments SQLAlchemy makes of the URL name them.
        arguments["dsn"] = "postgresql://?" + urlencode(libpq)
    return url.difference_update_query(set(url.query) - _READ_BY_SQLALCHEMY), arguments


def _system_authorities(sslmode: str) -> ssl.SSLContext:
    """``sslrootcert=system``, as libpq 16 reads it: the server's certificate and name
    checked against the system's authorities, which only ``verify-full`` does."""
    if sslmode != "verify-full":
        raise ValueError(f"sslrootcert=system: sslmode={sslmode} checks less than verify-full")
    return ssl.create_default_context()


def _connect_timeout(value: str, timeout: float) -> float:
    """libpq's ``connect_timeout``, in seconds, for the whole attempt (every host of the
    URL's); as libpq, 0 or less sets no limit of its own, which leaves the store timeout's."""
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"connect_timeout={value!r} is not a number of seconds") from None
    return seconds if seconds > 0 else timeout


def reader(engine: AsyncEngine, apart: Callable[..., AsyncEngine]) -> AsyncEngine:
    # The driver's autocommit is the absence of BEGIN: no round trip to switch to it, and
    # none to begin and roll back a transaction around each read.
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def configure(engine: AsyncEngine) -> None:
    """Have asyncpg read ``timestamptz`` values as text, parsed by ``fromisoformat``.

    Its binary decoding builds each datetime with Python-level arithmetic, a microsecond
    apiece: a page of authors with their two timestamps spent more on those than on the
    rest of their rows. Parsing the text form is a third of that, with the same values
    (the session's time zone is UTC, see core/connections.py, so every value comes back
    with UTC's offset, as the binary form's do).
    """
    if engine.dialect.driver != "asyncpg":
        return

    def on_connect(connection: Any, _: Any) -> None:
        connection.run_async(
            lambda driver: driver.set_type_codec(
                "timestamptz",
                schema="pg_catalog",
                encoder=str,
                decoder=_timestamp,
                format="text",
            )
        )

    event.listen(engine.sync_engine, "connect", on_connect)


# PostgreSQL's infinite timestamps, as asyncpg's binary decoding gives them.
INFINITE_TIMESTAMPS = {
    "infinity": datetime.max.replace(tzinfo=UTC),
    "-infinity": datetime.min.replace(tzinfo=UTC),
}


def _timestamp(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return INFINITE_TIMESTAMPS[text]


@compiles(EqualsAny, "postgresql")
def _equals_any(element: EqualsAny, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column == any_(element.keys), **kw)


@compiles(MatchesSearch, "postgresql")
def _matches_search(element: MatchesSearch, compiler: SQLCompiler, **kw: Any) -> str:
    matched = search_document(element.title, element.abstract).op("@@")(
        func.websearch_to_tsquery(text(f"'{SEARCH_CONFIG}'::regconfig"), element.search)
    )
    return compiler.process(matched, **kw)


async def upsert_existing_counters(
    connection: AsyncConnection,
    *,
    snapshots: Table,
    reports: Table,
    counters: Sequence[tuple[int, int, int]],
) -> None:
    """Write (report id, views, downloads) snapshots for the reports that still exist.

    Counters outlive a deleted report until its keys expire; joining on ``reports`` skips
    those instead of failing on the foreign key.
    """
    if not counters:
        return
    ids, views, downloads = (list(column) for column in zip(*counters, strict=True))
    incoming = (
        select(
            func.unnest(bindparam("ids", ids, type_=ARRAY(Integer))).label("report_id"),
            func.unnest(bindparam("views", views, type_=ARRAY(Integer))).label("views"),
            func.unnest(bindparam("downloads", downloads, type_=ARRAY(Integer))).label("downloads"),
        )
    ).subquery()
    statement = postgres_insert(snapshots).from_select(
        ["report_id", "views", "downloads", "captured_at"],
        select(incoming.c.report_id, incoming.c.views, incoming.c.downloads, func.now()).join(
            reports, reports.c.id == incoming.c.report_id
        ),
    )
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=["report_id"],
            set_={
                "views": statement.excluded.views,
                "downloads": statement.excluded.downloads,
                "captured_at": statement.excluded.captured_at,
            },
        )
    )


@asynccontextmanager
async def migrating(connection: AsyncConnection) -> AsyncIterator[None]:
    """Nothing to set: PostgreSQL alters tables in place."""
    yield


async def explain(connection: AsyncConnection, statement: str, parameters: Sequence[Any]) -> Any:
    """The ``FORMAT JSON`` document of ``EXPLAIN (ANALYZE, BUFFERS)``: the statement runs."""
    explained = await connection.exec_driver_sql(
        f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", tuple(parameters)
    )
    plans = explained.scalar_one()
    return (orjson.loads(plans) if isinstance(plans, (str, bytes)) else plans)[0]


# Where a plan node names the condition it joins on.
JOIN_CONDITIONS = ("Hash Cond", "Merge Cond", "Join Filter")


def plan_hints(plan: Mapping[str, Any], worth_an_index: int) -> Iterator[str]:
    """Sequential scans of more than ``worth_an_index`` rows for a condition an index on
    its columns could serve."""
    return _scan_hints(plan["Plan"], None, worth_an_index)


def _scan_hints(
    plan: Mapping[str, Any], parent: Mapping[str, Any] | None, worth_an_index: int
) -> Iterator[str]:
    if plan.get("Node Type") == "Seq Scan":
        table = plan.get("Relation Name", "?")
        kept = plan.get("Actual Rows", 0)
        scanned = kept + plan.get("Rows Removed by Filter", 0)
        if scanned > worth_an_index:
            if "Filter" in plan:
                yield (
                    f"Seq Scan on {table} read {scanned:g} rows to keep {kept:g} "
                    f"(Filter: {plan['Filter']}): an index on the filtered columns would "
                    "serve it"
                )
            elif parent is not None and (join := _join_condition(parent)) is not None:
                yield (
                    f"Seq Scan on {table} read {scanned:g} rows for a join ({join}): an index "
                    "on the joined column would serve it"
                )
    for child in plan.get("Plans", ()):
        yield from _scan_hints(child, plan, worth_an_index)


def _join_condition(plan: Mapping[str, Any]) -> str | None:
    return next((plan[name] for name in JOIN_CONDITIONS if name in plan), None)
