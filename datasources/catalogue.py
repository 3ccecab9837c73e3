"""Bulk writes to the relational catalogue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from datasources import postgres_dialect
from datasources.models import Base, Report, ReportAuthor, ReportTechnology

Row = dict[str, Any]


async def upsert_entities(
    *, connection: AsyncConnection, model: type[Base], rows: Sequence[Row]
) -> None:
    """Insert rows with explicit ids, or overwrite the rows that have those ids."""
    await postgres_dialect.upsert_rows(connection, table=_table(model), rows=rows, keys=["id"])


async def replace_reports(
    *,
    connection: AsyncConnection,
    reports: Sequence[Row],
    authorships: Sequence[Row],
    technologies: Sequence[Row],
) -> None:
    """Write reports with exactly the given author and technology links.

    Links of these reports that are not in the new set are removed first, so the
    "one primary author" rule can never be broken by a leftover link.
    """
    ids = [row["id"] for row in reports]
    await upsert_entities(connection=connection, model=Report, rows=reports)
    await connection.execute(delete(ReportAuthor).where(ReportAuthor.report_id.in_(ids)))
    await connection.execute(delete(ReportTechnology).where(ReportTechnology.report_id.in_(ids)))
    if authorships:
        await connection.execute(insert(ReportAuthor), list(authorships))
    if technologies:
        await connection.execute(insert(ReportTechnology), list(technologies))


async def advance_id_sequences(
    *, connection: AsyncConnection, models: Sequence[type[Base]]
) -> None:
    for model in models:
        await postgres_dialect.advance_sequence(connection, table=_table(model))


def _table(model: type[Base]) -> Table:
    # Declarative models are typed as mapping any FromClause; ours all map a Table.
    table = model.__table__
    assert isinstance(table, Table)
    return table
