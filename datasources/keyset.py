"""Keyset pagination: pages that start after (or end before) a known row, never at an OFFSET.

A position in an ordering is the pair (sort value, id): the id breaks ties, so every row
has exactly one position and a page boundary is stable while rows are inserted or deleted
elsewhere in the list. Pages of many parents at once (the first five reports of each of
fifty authors) are one query, ranked per parent with a window function.

A page's and a count's statements are kept by what they are made of (the list's query,
the ordering, the page asked for), so that a page asked again, the first page of a list
above all, costs no statement building: SQLAlchemy keeps the cache key it computes on the
statement, and datasources/driver_reads.py keeps the compiled SQL by that key. The lists'
queries are made once per distinct filter for the same reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources.driver_reads import rows_of
from datasources.portable_sql import equals_any
from datasources.records import WIDTH, record_type_of, to_records

SORT_KEY = "sort_key"
TOTAL = "total"
PARENT_ID = "parent_id"
RANK = "rank"

Position = tuple[Any, int]
# Statements kept: distinct lists, orderings and positions asked for recently.
STATEMENTS = 256


@dataclass(frozen=True)
class Ordering:
    key: ColumnElement[Any]
    id: ColumnElement[int]
    descending: bool


@dataclass(frozen=True)
class PageRequest:
    """``limit`` rows after ``after`` (forward), or the last ``limit`` before ``before``."""

    limit: int
    after: Position | None = None
    before: Position | None = None
    backward: bool = False


@dataclass(frozen=True)
class Page:
    """A page of records, each with its sort value: with its id, its position; and the
    whole list's length where the page was read with it and has a row to carry it."""

    records: list[Any]
    sort_keys: list[Any]
    has_next: bool
    has_previous: bool
    total: int | None = None


def _conditions(ordering: Ordering, request: PageRequest) -> list[ColumnElement[bool]]:
    position = tuple_(ordering.key, ordering.id)
    conditions = []
    if request.after is not None:
        after = tuple_(*request.after)
        conditions.append(position < after if ordering.descending else position > after)
    if request.before is not None:
        before = tuple_(*request.before)
        conditions.append(position > before if ordering.descending else position < before)
    return conditions


def _order(ordering: Ordering, request: PageRequest) -> list[ColumnElement[Any]]:
    # Backward pages are read in reverse from their end, then put back in order.
    descending = ordering.descending != request.backward
    return [column.desc() if descending else column.asc() for column in (ordering.key, ordering.id)]


def _page(
    rows: Sequence[Sequence[Any]], request: PageRequest, record: type[Any], *, counted: bool = False
) -> Page:
    more = len(rows) > request.limit
    kept = list(rows[: request.limit])
    if request.backward:
        kept.reverse()
    # The sort value is the first column after the table's, the list's length the next.
    width = WIDTH[record]
    records, sort_keys = to_records(record, kept), [row[width] for row in kept]
    total = int(rows[0][width + 1]) if counted and rows else None
    if request.backward:
        has_next, has_previous = request.before is not None, more
    else:
        has_next, has_previous = more, request.after is not None
    return Page(records, sort_keys, has_next=has_next, has_previous=has_previous, total=total)


async def fetch_page(
    engine: AsyncEngine,
    query: Select[Any],
    ordering: Ordering,
    request: PageRequest,
    *,
    counted: Select[Any] | None = None,
) -> Page:
    """A page of ``query``'s rows; with ``counted`` (the same list, as ``count`` takes it),
    with the length of the whole list, read by the same statement: a count of its own cost
    a round trip, and a store call's share of the gateway's CPU (a fiftieth of the nested
    query's). An empty page has no row to carry it (see ``count``)."""
    statement, record = _page_statement(query, ordering, request, counted)
    return _page(await rows_of(engine, statement), request, record, counted=counted is not None)


@lru_cache(maxsize=STATEMENTS)
def _page_statement(
    query: Select[Any], ordering: Ordering, request: PageRequest, counted: Select[Any] | None
) -> tuple[Select[Any], type[Any]]:
    columns = [ordering.key.label(SORT_KEY)]
    if counted is not None:
        # Not correlated with the page: every server computes it once per statement.
        columns.append(_count_statement(counted).scalar_subquery().label(TOTAL))
    statement = (
        query.add_columns(*columns)
        .where(*_conditions(ordering, request))
        .order_by(*_order(ordering, request))
        .limit(request.limit + 1)
    )
    return statement, record_type_of(query)


async def fetch_pages_by_parent(
    engine: AsyncEngine,
    query: Select[Any],
    *,
    parent: ColumnElement[int],
    parent_ids: Sequence[int],
    ordering: Ordering,
    request: PageRequest,
) -> list[Page]:
    """The same page of each parent's list, in one statement; in ``parent_ids`` order."""
    ranked = (
        query.add_columns(
            ordering.key.label(SORT_KEY),
            parent.label(PARENT_ID),
            func.row_number()
            .over(partition_by=parent, order_by=_order(ordering, request))
            .label(RANK),
        )
        .where(equals_any(parent, parent_ids), *_conditions(ordering, request))
        .subquery()
    )
    statement = (
        select(ranked)
        .where(ranked.c[RANK] <= request.limit + 1)
        .order_by(ranked.c[PARENT_ID], ranked.c[RANK])
    )
    rows = await rows_of(engine, statement)
    record = record_type_of(query)
    # After the table's columns: the sort value, then the parent's id.
    parent_at = WIDTH[record] + 1
    by_parent: dict[int, list[Sequence[Any]]] = defaultdict(list)
    for row in rows:
        by_parent[row[parent_at]].append(row)
    return [_page(by_parent.get(parent_id, []), request, record) for parent_id in parent_ids]


async def count_by_parent(
    engine: AsyncEngine, query: Select[Any], parent: ColumnElement[int], parent_ids: Sequence[int]
) -> list[int]:
    statement = (
        query.with_only_columns(parent, func.count())
        .where(equals_any(parent, parent_ids))
        .group_by(parent)
    )
    counts = {row[0]: row[1] for row in await rows_of(engine, statement)}
    return [counts.get(parent_id, 0) for parent_id in parent_ids]


async def count(engine: AsyncEngine, query: Select[Any]) -> int:
    rows = await rows_of(engine, _count_statement(query))
    return int(rows[0][0] or 0)


@lru_cache(maxsize=STATEMENTS)
def _count_statement(query: Select[Any]) -> Select[Any]:
    return select(func.count()).select_from(query.subquery())
