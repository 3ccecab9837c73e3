"""What reads of the catalogue hand across the boundary of ``datasources``: typed records,
one per row, instead of rows read by string names.

A record's fields are columns of its table, those the API reads: an author's and an
institution's timestamps, which no field shows, are never fetched (decoding them was a
tenth of the reading of a page of reports with their authors). A read selects a record's
columns with ``record_columns`` (any columns it adds come after them), so its row becomes
a record by position, the cheapest way there is; a test holds fields and columns
together. Records are named tuples: made from a row's values in one step (a fifth of what
a dataclass's ``__init__`` costs, which for the thousands of rows of a large response adds
up), read by attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Column, Select, Table


class InstitutionRecord(NamedTuple):
    id: int
    name: str
    country: str | None
    website: str | None


class AuthorRecord(NamedTuple):
    id: int
    name: str
    email: str
    institution_id: int | None
    orcid: str | None


class ReportTypeRecord(NamedTuple):
    id: int
    name: str
    description: str | None


class ReportRecord(NamedTuple):
    id: int
    title: str
    abstract: str | None
    publication_date: date | None
    report_type_id: int
    word_count: int
    status: str
    created_at: datetime
    updated_at: datetime


class TechnologyRecord(NamedTuple):
    id: int
    name: str
    version: str
    description: str | None
    technology_type: str


class AuthorshipRecord(NamedTuple):
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
# Queries whose record is kept: reading it off a statement walks its selected columns,
# and the lists' queries are made once and asked about at every page.
QUERIES_KEPT = 256
WIDTH = {record: len(record._fields) for record in RECORD_OF_TABLE.values()}
# A record of values, its fields in order, made without calling the record's ``__new__``:
# ``make_record(AuthorRecord, values)``.
make_record: Callable[..., Any] = tuple.__new__


def record_type(table_name: str) -> type[Any]:
    return RECORD_OF_TABLE[table_name]


def record_columns(table: Table) -> list[Column[Any]]:
    """The columns a record of ``table`` is made of, in its order."""
    return [table.c[name] for name in RECORD_OF_TABLE[table.name]._fields]


@lru_cache(maxsize=QUERIES_KEPT)
def record_type_of(query: Select[Any]) -> type[Any]:
    """The record of the table whose ``record_columns`` a query selects (joined tables
    only filter)."""
    return RECORD_OF_TABLE[query.selected_columns[0].table.name]


def to_records(record: type[Any], rows: Sequence[Sequence[Any]], start: int = 0) -> list[Any]:
    """A record of each row, of its columns from ``start`` on."""
    stop = start + WIDTH[record]
    return [make_record(record, row[start:stop]) for row in rows]
