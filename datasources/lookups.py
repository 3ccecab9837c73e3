"""Batch lookups by id, under the DataLoader contract: one result per key, in key order,
``None`` for a key that matches nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Select, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources.models import Author, ReportAuthor, ReportTechnology, Technology
from datasources.postgres_dialect import equals_any
from datasources.records import (
    AuthorRecord,
    AuthorshipRecord,
    TechnologyRecord,
    record_type,
    to_records,
)


async def records_by_id(
    *, engine: AsyncEngine, table: Table, ids: Sequence[int]
) -> list[Any | None]:
    statement = select(table).where(equals_any(table.c.id, ids))
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    found = {record.id: record for record in to_records(record_type(table.name), rows)}
    return [found.get(key) for key in ids]


async def _grouped(
    engine: AsyncEngine,
    statement: Select[Any],
    ids: Sequence[int],
    record: Callable[[Sequence[Any]], Any],
) -> list[list[Any]]:
    """Rows of ``statement`` (the parent's id first) as records, grouped by parent."""
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    grouped: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row[0]].append(record(row))
    return [grouped.get(key, []) for key in ids]


async def authorships_by_report(
    *, engine: AsyncEngine, report_ids: Sequence[int]
) -> list[list[AuthorshipRecord]]:
    """Each report's authors with their link (primary flag, position), primary first."""
    link: Any = ReportAuthor.__table__
    statement = (
        select(
            link.c.report_id,
            link.c.is_primary_author,
            link.c.position,
            Author.__table__,
        )
        .join(link, link.c.author_id == Author.id)
        .where(equals_any(link.c.report_id, report_ids))
        .order_by(link.c.report_id, link.c.is_primary_author.desc(), link.c.position, Author.id)
    )
    return await _grouped(
        engine,
        statement,
        report_ids,
        lambda row: AuthorshipRecord(AuthorRecord(*row[3:]), row[1], row[2]),
    )


async def technologies_by_report(
    *, engine: AsyncEngine, report_ids: Sequence[int]
) -> list[list[TechnologyRecord]]:
    link: Any = ReportTechnology.__table__
    statement = (
        select(link.c.report_id, Technology.__table__)
        .join(link, link.c.technology_id == Technology.id)
        .where(equals_any(link.c.report_id, report_ids))
        .order_by(link.c.report_id, Technology.name, Technology.version)
    )
    return await _grouped(engine, statement, report_ids, lambda row: TechnologyRecord(*row[1:]))
