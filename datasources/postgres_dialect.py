"""What only PostgreSQL does: full-text search, array parameters, upserts, sequences.

Everything else the gateway sends to the relational store is portable SQLAlchemy; keeping
these few constructs here is what a second relational backend would have to replace.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Date,
    Index,
    Integer,
    Table,
    any_,
    bindparam,
    event,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgres_insert

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# English stemming; the index and the queries that must use it share this expression.
SEARCH_CONFIG = "english"


def search_document(title: ColumnElement[Any], abstract: ColumnElement[Any]) -> ColumnElement[Any]:
    return func.to_tsvector(
        # text(), not literal_column(): an Index finds its table through the first column
        # it meets in the expression, and a literal column has none.
        text(f"'{SEARCH_CONFIG}'::regconfig"),
        func.coalesce(title, "") + " " + func.coalesce(abstract, ""),
    )


def publication_sort_key(publication_date: ColumnElement[Any]) -> ColumnElement[Any]:
    """A report's place in the date ordering: reports without a publication date sort as the
    earliest, so that every report has one (a NULL would compare as unknown in a keyset
    condition). The date is written in the statement, not sent as a parameter, so that the
    index on this expression serves the ordering under any plan of a prepared statement."""
    return func.coalesce(publication_date, literal_column("DATE '0001-01-01'", Date))


def search_index(name: str, title: ColumnElement[Any], abstract: ColumnElement[Any]) -> Index:
    return Index(name, search_document(title, abstract), postgresql_using="gin")


async def upsert_rows(
    connection: AsyncConnection, *, table: Table, rows: Sequence[dict[str, Any]], keys: list[str]
) -> None:
    """Insert rows, or overwrite the existing ones with the same key columns."""
    if not rows:
        return
    statement = postgres_insert(table)
    updated = {
        column.name: statement.excluded[column.name]
        for column in table.columns
        if column.name in rows[0] and column.name not in keys
    }
    statement = (
        statement.on_conflict_do_update(index_elements=keys, set_=updated)
        if updated
        else statement.on_conflict_do_nothing(index_elements=keys)
    )
    await connection.execute(statement, list(rows))


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


def decode_timestamps_from_text(engine: AsyncEngine) -> None:
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


def equals_any(column: ColumnElement[Any], values: Sequence[int]) -> ColumnElement[bool]:
    """``column = ANY(:values)``: one array parameter however many values, so the statement
    text (and its cached plan) is the same for 1 key or 1,000."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(Integer)))


def equals_any_given(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column = ANY(:name)``, the array of integers given when the statement runs."""
    return column == any_(bindparam(name, type_=ARRAY(Integer)))


def matches_search(
    title: ColumnElement[Any], abstract: ColumnElement[Any], query: str
) -> ColumnElement[bool]:
    """Full-text match with web-search syntax ("quoted phrases", -exclusions, or)."""
    return search_document(title, abstract).op("@@")(
        func.websearch_to_tsquery(text(f"'{SEARCH_CONFIG}'::regconfig"), query)
    )


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
