"""What reads of the catalogue hand across the boundary of ``datasources``: typed records,
one per row, instead of SQLAlchemy rows read by string names.

A record's fields are its table's columns, in the table's order, so a row of
``select(table)`` (with any columns added after the table's) becomes a record by position,
the cheapest way there is; a test holds the two orders together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select


@dataclass(frozen=True, slots=True)
class InstitutionRecord:
    id: int
    name: str
    country: str | None
    website: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AuthorRecord:
    id: int
    name: str
    email: str
    institution_id: int | None
    orcid: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReportTypeRecord:
    id: int
    name: str
    description: str | None


@dataclass(frozen=True, slots=True)
class ReportRecord:
    id: int
    title: str
    abstract: str | None
    publication_date: date | None
    report_type_id: int
    word_count: int
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TechnologyRecord:
    id: int
    name: str
    version: str
    description: str | None
    technology_type: str


@dataclass(frozen=True, slots=True)
class AuthorshipRecord:
    """An author of a report, with their part in it."""

    author: AuthorRecord
    is_primary_author: bool
    position: int


RECORD_OF_TABLE: dict[str, type[Any]] = {
    "institutions": InstitutionRecord,
    "authors": AuthorRecord,
    "report_types": ReportTypeRecord,
    "reports": ReportRecord,
    "technologies": TechnologyRecord,
}
WIDTH = {record: len(fields(record)) for record in RECORD_OF_TABLE.values()}


def record_type(table_name: str) -> type[Any]:
    return RECORD_OF_TABLE[table_name]


def record_type_of(query: Select[Any]) -> type[Any]:
    """The record of the table a ``select(table)`` reads (joined tables only filter)."""
    return RECORD_OF_TABLE[query.selected_columns[0].table.name]


def to_records(record: type[Any], rows: Sequence[Sequence[Any]]) -> list[Any]:
    width = WIDTH[record]
    return [record(*row[:width]) for row in rows]
