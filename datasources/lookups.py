"""Batch lookups by id, under the DataLoader contract: one result per key, in key order,
``None`` for a key that matches nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, Select, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources.models import Author, ReportAuthor, ReportTechnology, Technology
from datasources.postgres_dialect import equals_any


async def rows_by_id(
    *, engine: AsyncEngine, table: Table, ids: Sequence[int]
) -> list[Row[Any] | None]:
    statement = select(table).where(equals_any(table.c.id, ids))
    async with engine.connect() as connection:
        found = {row.id: row for row in await connection.execute(statement)}
    return [found.get(key) for key in ids]


async def _grouped(
    engine: AsyncEngine, statement: Select[Any], parent: str, ids: Sequence[int]
) -> list[list[Row[Any]]]:
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    grouped: dict[int, list[Row[Any]]] = defaultdict(list)
    for row in rows:
        grouped[getattr(row, parent)].append(row)
    return [grouped.get(key, []) for key in ids]


async def authorships_by_report(
    *, engine: AsyncEngine, report_ids: Sequence[int]
) -> list[list[Row[Any]]]:
    """Each report's authors with their link (primary flag, position), primary first."""
    link: Any = ReportAuthor.__table__
    statement = (
        select(
            Author.__table__,
            link.c.report_id,
            link.c.is_primary_author,
            link.c.position,
        )
        .join(link, link.c.author_id == Author.id)
        .where(equals_any(link.c.report_id, report_ids))
        .order_by(link.c.report_id, link.c.is_primary_author.desc(), link.c.position, Author.id)
    )
    return await _grouped(engine, statement, "report_id", report_ids)


async def technologies_by_report(
    *, engine: AsyncEngine, report_ids: Sequence[int]
) -> list[list[Row[Any]]]:
    link: Any = ReportTechnology.__table__
    statement = (
        select(Technology.__table__, link.c.report_id)
        .join(link, link.c.technology_id == Technology.id)
        .where(equals_any(link.c.report_id, report_ids))
        .order_by(link.c.report_id, Technology.name, Technology.version)
    )
    return await _grouped(engine, statement, "report_id", report_ids)
