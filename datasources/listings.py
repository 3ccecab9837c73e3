"""Paginated lists of authors, institutions and technologies, ordered by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources import keyset
from datasources.driver_reads import rows_of
from datasources.keyset import Ordering, Page, PageRequest
from datasources.models import Author
from datasources.records import COUNTED, fields_read, record_query, record_type, to_records

AUTHORS: Any = Author.__table__


def by_name(table: Table) -> Ordering:
    return Ordering(key=table.c.name, id=table.c.id, descending=False)


async def entity_page(
    *, engine: AsyncEngine, table: Table, request: PageRequest, counted: bool = False
) -> Page:
    """A page of the table's rows by name; ``counted``, with how many rows it has."""
    return await keyset.fetch_page(
        engine,
        record_query(table, fields_read(table.name)),
        by_name(table),
        request,
        counted=record_query(table, COUNTED) if counted else None,
    )


async def count_entities(*, engine: AsyncEngine, table: Table) -> int:
    return await keyset.count(engine, record_query(table, COUNTED))


async def author_pages_by_institution(
    *, engine: AsyncEngine, institution_ids: Sequence[int], request: PageRequest
) -> list[Page]:
    authors = record_query(AUTHORS, fields_read(AUTHORS.name))
    return await keyset.fetch_pages_by_parent(
        engine, authors, parent=AUTHORS.c.institution_id, parent_ids=institution_ids,
        ordering=by_name(AUTHORS), request=request,
    )  # fmt: skip


async def count_authors_by_institution(
    *, engine: AsyncEngine, institution_ids: Sequence[int]
) -> list[int]:
    return await keyset.count_by_parent(
        engine, record_query(AUTHORS, COUNTED), AUTHORS.c.institution_id, institution_ids
    )


async def all_by_name(*, engine: AsyncEngine, table: Table) -> list[Any]:
    """A whole small table (report types), by name."""
    statement = record_query(table, fields_read(table.name)).order_by(table.c.name, table.c.id)
    rows = await rows_of(engine, statement)
    return to_records(record_type(table.name), rows)
