"""Writes to the relational catalogue: bulk (the seed) and one row at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from datasources.dialects import backend_of
from datasources.models import Author, Base, Report, ReportAuthor, ReportTechnology

Row = dict[str, Any]


async def upsert_entities(
    *, connection: AsyncConnection, model: type[Base], rows: Sequence[Row]
) -> None:
    """Insert rows with explicit ids, or overwrite the rows that have those ids."""
    await backend_of(connection).upsert_rows(
        connection, table=_table(model), rows=rows, keys=["id"]
    )


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
        await backend_of(connection).advance_sequence(connection, table=_table(model))


def _table(model: type[Base]) -> Table:
    # Declarative models are typed as mapping any FromClause; ours all map a Table.
    table = model.__table__
    assert isinstance(table, Table)
    return table


async def insert_row(*, engine: AsyncEngine, model: type[Base], values: Row) -> int:
    """Insert one row; its new id. A unique violation raises IntegrityError."""
    table = _table(model)
    async with engine.begin() as connection:
        new_id = await connection.scalar(insert(table).values(**values).returning(table.c.id))
    assert new_id is not None
    return int(new_id)


async def update_row(*, engine: AsyncEngine, model: type[Base], row_id: int, values: Row) -> bool:
    """Change the given columns of one row; False if there is no such row."""
    table = _table(model)
    if "updated_at" in table.c:
        values = {**values, "updated_at": func.now()}
    async with engine.begin() as connection:
        # Rows matched, on every backend (MariaDB has no UPDATE … RETURNING).
        updated = await connection.execute(
            update(table).where(table.c.id == row_id).values(**values)
        )
    return updated.rowcount > 0


@dataclass(frozen=True)
class AuthorDeletion:
    deleted: bool
    # Reports that have the author as primary author, which block the deletion.
    primary_of: int = 0


async def delete_author(*, engine: AsyncEngine, author_id: int) -> AuthorDeletion:
    """Delete an author, unless a report has them as its primary author."""
    links: Any = ReportAuthor.__table__
    authors: Any = Author.__table__
    async with engine.begin() as connection:
        primary_of = await connection.scalar(
            select(func.count()).where(links.c.author_id == author_id, links.c.is_primary_author)
        )
        if primary_of:
            return AuthorDeletion(deleted=False, primary_of=int(primary_of))
        deleted = await connection.scalar(
            delete(authors).where(authors.c.id == author_id).returning(authors.c.id)
        )
    return AuthorDeletion(deleted=deleted is not None)
