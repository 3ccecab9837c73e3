"""Reading reports: filtered, ordered, paginated; at the root or under a parent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources import keyset
from datasources.keyset import Ordering, Page, PageRequest
from datasources.models import (
    Author,
    Report,
    ReportAuthor,
    ReportCounterSnapshot,
    ReportTechnology,
)
from datasources.portable_sql import MatchesSearch, equals_any, publication_sort_key
from datasources.records import COUNTED, fields_read, record_query

REPORTS: Any = Report.__table__
AUTHORSHIPS: Any = ReportAuthor.__table__
REPORT_TECHNOLOGIES: Any = ReportTechnology.__table__
AUTHORS: Any = Author.__table__
SNAPSHOTS: Any = ReportCounterSnapshot.__table__


class ReportSort(StrEnum):
    PUBLICATION_DATE = "publication_date"
    TITLE = "title"
    WORD_COUNT = "word_count"
    VIEWS = "views"


SORT_KEYS: dict[ReportSort, ColumnElement[Any]] = {
    ReportSort.PUBLICATION_DATE: publication_sort_key(REPORTS.c.publication_date),
    ReportSort.TITLE: REPORTS.c.title,
    ReportSort.WORD_COUNT: REPORTS.c.word_count,
    # From the snapshot of Redis's counters; a report never counted has 0 views.
    ReportSort.VIEWS: func.coalesce(
        select(SNAPSHOTS.c.views).where(SNAPSHOTS.c.report_id == REPORTS.c.id).scalar_subquery(),
        0,
    ),
}


def report_ordering(sort: ReportSort, *, descending: bool) -> Ordering:
    return Ordering(key=SORT_KEYS[sort], id=REPORTS.c.id, descending=descending)


@dataclass(frozen=True)
class ReportFilter:
    statuses: tuple[str, ...] = ()
    type_ids: tuple[int, ...] = ()
    author_ids: tuple[int, ...] = ()
    institution_ids: tuple[int, ...] = ()
    technology_ids: tuple[int, ...] = ()
    published_from: date | None = None
    published_to: date | None = None
    search: str | None = None
    # Answered by the document store first; the ids it returns restrict the SQL query.
    tags: tuple[str, ...] = ()


def _conditions(
    criteria: ReportFilter, tagged_ids: Sequence[int] | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if criteria.statuses:
        conditions.append(REPORTS.c.status.in_(criteria.statuses))
    if criteria.type_ids:
        conditions.append(equals_any(REPORTS.c.report_type_id, criteria.type_ids))
    # Each relation as the ids of the reports it holds, which SQLite reads through the link
    # table's index on the filtered column: the rows of those ids only. A correlated EXISTS
    # it checked report by report, every report. PostgreSQL and MariaDB plan both alike.
    if criteria.author_ids:
        conditions.append(
            REPORTS.c.id.in_(
                select(AUTHORSHIPS.c.report_id).where(
                    equals_any(AUTHORSHIPS.c.author_id, criteria.author_ids)
                )
            )
        )
    if criteria.institution_ids:
        conditions.append(
            REPORTS.c.id.in_(
                select(AUTHORSHIPS.c.report_id)
                .join(AUTHORS, AUTHORS.c.id == AUTHORSHIPS.c.author_id)
                .where(equals_any(AUTHORS.c.institution_id, criteria.institution_ids))
            )
        )
    if criteria.technology_ids:
        conditions.append(
            REPORTS.c.id.in_(
                select(REPORT_TECHNOLOGIES.c.report_id).where(
                    equals_any(REPORT_TECHNOLOGIES.c.technology_id, criteria.technology_ids)
                )
            )
        )
    if criteria.published_from is not None:
        conditions.append(REPORTS.c.publication_date >= criteria.published_from)
    if criteria.published_to is not None:
        conditions.append(REPORTS.c.publication_date <= criteria.published_to)
    if criteria.search:
        conditions.append(MatchesSearch(REPORTS.c.title, REPORTS.c.abstract, criteria.search))
    if tagged_ids is not None:
        conditions.append(equals_any(REPORTS.c.id, tagged_ids))
    return conditions


def _filtered(
    criteria: ReportFilter, tagged_ids: Sequence[int] | None, fields: frozenset[str] | None
) -> Select[Any]:
    if tagged_ids is None:
        return _untagged(criteria, fields)
    # Not kept: the ids of a tag's reports can be thousands.
    return _where(criteria, tagged_ids, fields)


@lru_cache(maxsize=keyset.STATEMENTS)
def _untagged(criteria: ReportFilter, fields: frozenset[str] | None) -> Select[Any]:
    return _where(criteria, None, fields)


def _where(
    criteria: ReportFilter, tagged_ids: Sequence[int] | None, fields: frozenset[str] | None
) -> Select[Any]:
    return record_query(REPORTS, fields).where(and_(True, *_conditions(criteria, tagged_ids)))


async def report_page(
    *,
    engine: AsyncEngine,
    criteria: ReportFilter,
    tagged_ids: Sequence[int] | None,
    ordering: Ordering,
    request: PageRequest,
    counted: bool = False,
) -> Page:
    """A page of the reports that match; ``counted``, with how many match."""
    query = _filtered(criteria, tagged_ids, fields_read(REPORTS.name))
    counting = _filtered(criteria, tagged_ids, COUNTED) if counted else None
    return await keyset.fetch_page(engine, query, ordering, request, counted=counting)


async def count_reports(
    *, engine: AsyncEngine, criteria: ReportFilter, tagged_ids: Sequence[int] | None
) -> int:
    return await keyset.count(engine, _filtered(criteria, tagged_ids, COUNTED))


class ReportParent(StrEnum):
    AUTHOR = "author"
    TECHNOLOGY = "technology"
    REPORT_TYPE = "report_type"


@lru_cache(maxsize=keyset.STATEMENTS)
def _under(
    parent: ReportParent, fields: frozenset[str] | None
) -> tuple[Select[Any], ColumnElement[int]]:
    """The reports under a kind of parent, one statement each (see keyset)."""
    reports = record_query(REPORTS, fields)
    if parent is ReportParent.AUTHOR:
        query = reports.join(AUTHORSHIPS, AUTHORSHIPS.c.report_id == REPORTS.c.id)
        return query, AUTHORSHIPS.c.author_id
    if parent is ReportParent.TECHNOLOGY:
        query = reports.join(REPORT_TECHNOLOGIES, REPORT_TECHNOLOGIES.c.report_id == REPORTS.c.id)
        return query, REPORT_TECHNOLOGIES.c.technology_id
    return reports, REPORTS.c.report_type_id


async def report_pages_by_parent(
    *,
    engine: AsyncEngine,
    parent: ReportParent,
    parent_ids: Sequence[int],
    ordering: Ordering,
    request: PageRequest,
) -> list[Page]:
    query, parent_column = _under(parent, fields_read(REPORTS.name))
    return await keyset.fetch_pages_by_parent(
        engine, query, parent=parent_column, parent_ids=parent_ids, ordering=ordering,
        request=request,
    )  # fmt: skip


async def count_reports_by_parent(
    *, engine: AsyncEngine, parent: ReportParent, parent_ids: Sequence[int]
) -> list[int]:
    query, parent_column = _under(parent, COUNTED)
    return await keyset.count_by_parent(engine, query, parent_column, parent_ids)
