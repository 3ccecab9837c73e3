"""Batch lookups by id, under the DataLoader contract: one result per key, in key order,
``None`` for a key that matches nothing.

They run at every level of every query, so each is a statement compiled once with the keys
as its one array parameter (see datasources/driver_reads.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources.driver_fetch import Rows
from datasources.driver_reads import DriverRead
from datasources.models import Author, ReportAuthor, ReportTechnology, Technology
from datasources.portable_sql import equals_any_given
from datasources.records import (
    QUERIES_KEPT,
    AuthorRecord,
    AuthorshipRecord,
    TechnologyRecord,
    fields_read,
    make_record,
    record_columns,
    record_query,
    record_type,
    to_records,
)

KEYS = "keys"
AUTHORSHIP_LINKS: Any = ReportAuthor.__table__
TECHNOLOGY_LINKS: Any = ReportTechnology.__table__
AUTHORS: Any = Author.__table__
TECHNOLOGIES_TABLE: Any = Technology.__table__


@lru_cache(maxsize=QUERIES_KEPT)
def _authorships(author_fields: frozenset[str] | None) -> DriverRead:
    return DriverRead(
        select(
            AUTHORSHIP_LINKS.c.report_id,
            AUTHORSHIP_LINKS.c.is_primary_author,
            AUTHORSHIP_LINKS.c.position,
            *record_columns(AUTHORS, author_fields),
        )
        .join(AUTHORSHIP_LINKS, AUTHORSHIP_LINKS.c.author_id == Author.id)
        .where(equals_any_given(AUTHORSHIP_LINKS.c.report_id, KEYS))
        .order_by(
            AUTHORSHIP_LINKS.c.report_id,
            AUTHORSHIP_LINKS.c.is_primary_author.desc(),
            AUTHORSHIP_LINKS.c.position,
            Author.id,
        )
    )


@lru_cache(maxsize=QUERIES_KEPT)
def _technologies(fields: frozenset[str] | None) -> DriverRead:
    return DriverRead(
        select(TECHNOLOGY_LINKS.c.report_id, *record_columns(TECHNOLOGIES_TABLE, fields))
        .join(TECHNOLOGY_LINKS, TECHNOLOGY_LINKS.c.technology_id == Technology.id)
        .where(equals_any_given(TECHNOLOGY_LINKS.c.report_id, KEYS))
        .order_by(TECHNOLOGY_LINKS.c.report_id, Technology.name, Technology.version)
    )


@lru_cache(maxsize=QUERIES_KEPT)
def _by_id(table: Table, fields: frozenset[str] | None) -> DriverRead:
    return DriverRead(record_query(table, fields).where(equals_any_given(table.c.id, KEYS)))


async def records_by_id(
    *, engine: AsyncEngine, table: Table, ids: Sequence[int]
) -> list[Any | None]:
    rows = await _by_id(table, fields_read(table.name)).rows(engine, **{KEYS: list(ids)})
    found = {record.id: record for record in to_records(record_type(table.name), rows)}
    return [found.get(key) for key in ids]


async def _grouped(
    engine: AsyncEngine,
    read: DriverRead,
    ids: Sequence[int],
    records: Callable[[Rows], list[Any]],
) -> list[list[Any]]:
    """Rows of ``read`` (the parent's id first) as ``records`` makes them, grouped by
    parent."""
    rows = await read.rows(engine, **{KEYS: list(ids)})
    grouped: dict[int, list[Any]] = defaultdict(list)
    for row, record in zip(rows, records(rows), strict=True):
        grouped[row[0]].append(record)
    return [grouped.get(key, []) for key in ids]


async def authorships_by_report(
    *, engine: AsyncEngine, report_ids: Sequence[int]
) -> list[list[AuthorshipRecord]]:
    """Each report's authors with their link (primary flag, position), primary first."""
    return await _grouped(
        engine,
        _authorships(fields_read(AUTHORS.name)),
        report_ids,
        lambda rows: [
            make_record(AuthorshipRecord, (make_record(AuthorRecord, row[3:]), row[1], row[2]))
            for row in rows
        ],
    )


async def technologies_by_report(
    *, engine: AsyncEngine, report_ids: Sequence[int]
) -> list[list[TechnologyRecord]]:
    return await _grouped(
        engine,
        _technologies(fields_read(TECHNOLOGIES_TABLE.name)),
        report_ids,
        lambda rows: to_records(TechnologyRecord, rows, 1),
    )
