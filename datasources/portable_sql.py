"""Expressions every relational backend supports, each written in its own SQL, and what
several backends do alike.

A statement is built once, from these, whatever the backend; each backend's module
(``postgres_dialect``, ``mysql_dialect``, ``sqlite_dialect``) says how it writes them, and
``datasources.dialects`` loads every such module. The forms here are what a statement
printed without a backend (in a log or a test) reads as.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Integer,
    Table,
    TypeDecorator,
    bindparam,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import BindParameter
from sqlalchemy.sql.visitors import InternalTraversal, _TraverseInternalsType
from sqlalchemy.types import Boolean, Date

# One parameter for any number of keys, so that a statement's text (and the plan a server
# keeps for it) is the same for 1 key or 1,000: an array where the backend has arrays, a
# JSON array on SQLite, which the statement unpacks. MySQL keeps no plan of a statement
# sent as text, and its dialect sends a placeholder per key instead.
KEY_LIST = JSON().with_variant(ARRAY(Integer), "postgresql")


class Predicate(ColumnElement[bool]):
    """A condition that is true or false of itself, as a comparison is."""

    type = Boolean()
    inherit_cache = True
    # Else, where booleans are integers (SQLite, MySQL), a WHERE clause compares it to 1,
    # and no index serves a comparison of a condition: on SQLite, every lookup of a list of
    # keys read its whole table, and every search the whole reports table.
    _is_implicitly_boolean = True


class EqualsAny(Predicate):
    """``column`` is one of the keys of a list parameter."""

    inherit_cache = True
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012 (SQLAlchemy's own declaration)
        ("column", InternalTraversal.dp_clauseelement),
        ("keys", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], keys: BindParameter[Any]) -> None:
        self.column = column
        self.keys = keys


@compiles(EqualsAny)
def _equals_any(element: EqualsAny, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} IN ({compiler.process(element.keys, **kw)})"


def equals_any(column: ColumnElement[Any], values: Sequence[int]) -> ColumnElement[bool]:
    return EqualsAny(column, bindparam(None, list(values), type_=KEY_LIST))


def equals_any_given(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column`` is one of the keys given as parameter ``name`` when the statement runs."""
    return EqualsAny(column, bindparam(name, type_=KEY_LIST))


class MatchesSearch(Predicate):
    """A report's title and abstract match a search in web-search syntax ("quoted
    phrases", -exclusions, or), by each backend's full-text index, with English stemming."""

    inherit_cache = True
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012 (SQLAlchemy's own declaration)
        ("title", InternalTraversal.dp_clauseelement),
        ("abstract", InternalTraversal.dp_clauseelement),
        ("search", InternalTraversal.dp_clauseelement),
    ]

    def __init__(
        self, title: ColumnElement[Any], abstract: ColumnElement[Any], search: str
    ) -> None:
        self.title = title
        self.abstract = abstract
        self.search: BindParameter[str] = bindparam(None, search)


@compiles(MatchesSearch)
def _matches_search(element: MatchesSearch, compiler: SQLCompiler, **kw: Any) -> str:
    columns = ", ".join(compiler.process(c, **kw) for c in (element.title, element.abstract))
    return f"MATCHES(({columns}), {compiler.process(element.search, **kw)})"


class EarliestDate(ColumnElement[Any]):
    """The date before every other, for reports without one (see
    ``publication_sort_key``), written into the statement rather than sent: an index on
    an expression serves only statements that write the same expression."""

    type = Date()
    inherit_cache = True
    _traverse_internals: _TraverseInternalsType = []  # noqa: RUF012 (SQLAlchemy's own declaration)


@compiles(EarliestDate)
def _earliest_date(element: EarliestDate, compiler: SQLCompiler, **kw: Any) -> str:
    return "DATE '0001-01-01'"


def publication_sort_key(publication_date: ColumnElement[Any]) -> ColumnElement[Any]:
    """A report's place in the date ordering: reports without a publication date sort as the
    earliest, so that every report has one (a NULL would compare as unknown in a keyset
    condition)."""
    return func.coalesce(publication_date, EarliestDate())


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time, always read back with UTC's offset: backends without a time zone in
    their timestamps (SQLite) keep it as UTC and give it back without one."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value if value is None or value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class WebSearch:
    """A search in PostgreSQL's ``websearch_to_tsquery`` syntax, taken apart: words are all
    required, "quoted phrases" are phrases, ``or`` between two terms takes either, and
    ``-term`` excludes. Each alternative is a list of required terms (words or phrases),
    unquoted."""

    alternatives: list[list[str]]
    excluded: list[str]


# A term of web-search syntax: a quoted phrase (its closing quote optional) or a word.
_TERM = re.compile(r'"([^"]*)"?|(\S+)')


def web_search(search: str) -> WebSearch:
    alternatives: list[list[str]] = [[]]
    excluded: list[str] = []
    for match in _TERM.finditer(search):
        phrase, word = match.group(1), match.group(2)
        if phrase is None and word.lower() == "or" and alternatives[-1]:
            alternatives.append([])
            continue
        negated = phrase is None and word.startswith("-") and len(word) > 1
        term = phrase if phrase is not None else word[1:] if negated else word
        if term.strip():
            (excluded if negated else alternatives[-1]).append(term)
    return WebSearch([group for group in alternatives if group], excluded)


class Upsert(Protocol):
    async def __call__(
        self,
        connection: AsyncConnection,
        *,
        table: Table,
        rows: Sequence[dict[str, Any]],
        keys: list[str],
    ) -> None: ...


class CountersUpsert(Protocol):
    async def __call__(
        self,
        connection: AsyncConnection,
        *,
        snapshots: Table,
        reports: Table,
        counters: Sequence[tuple[int, int, int]],
    ) -> None: ...


def overwritten_columns(table: Table, rows: Sequence[dict[str, Any]], keys: list[str]) -> list[str]:
    """The columns an upsert of ``rows`` overwrites in an existing row: those the rows
    give, but its key."""
    return [
        column.name
        for column in table.columns
        if column.name in rows[0] and column.name not in keys
    ]


def upsert_on_conflict(insert_into: Callable[[Table], Any]) -> Upsert:
    """An upsert by ``INSERT … ON CONFLICT``, which PostgreSQL and SQLite share, each
    built by the ``insert_into`` of its own dialect."""

    async def upsert(
        connection: AsyncConnection,
        *,
        table: Table,
        rows: Sequence[dict[str, Any]],
        keys: list[str],
    ) -> None:
        if not rows:
            return
        statement = insert_into(table)
        updated = {
            name: statement.excluded[name] for name in overwritten_columns(table, rows, keys)
        }
        statement = (
            statement.on_conflict_do_update(index_elements=keys, set_=updated)
            if updated
            else statement.on_conflict_do_nothing(index_elements=keys)
        )
        await connection.execute(statement, list(rows))

    return upsert


def counters_of_existing_reports(upsert: Upsert) -> CountersUpsert:
    """Snapshots of (report id, views, downloads), written by ``upsert`` for the reports
    that still exist: counters outlive a deleted report until their keys expire."""

    async def write(
        connection: AsyncConnection,
        *,
        snapshots: Table,
        reports: Table,
        counters: Sequence[tuple[int, int, int]],
    ) -> None:
        if not counters:
            return
        ids = [report for report, _, _ in counters]
        found = await connection.execute(select(reports.c.id).where(equals_any(reports.c.id, ids)))
        existing = set(found.scalars().all())
        captured_at = datetime.now(UTC)
        rows = [
            {"report_id": report, "views": views, "downloads": downloads,
             "captured_at": captured_at}
            for report, views, downloads in counters
            if report in existing
        ]  # fmt: skip
        if rows:
            await upsert(connection, table=snapshots, rows=rows, keys=["report_id"])

    return write
