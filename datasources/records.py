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

A record may also carry columns of a table its own refers to, joined into every statement
that reads it (``record_query``): a report carries its type, which most queries of reports
show, and which in a statement of its own cost each of them a round trip for eight rows.

An operation may also say which fields of each table's records it reads (``reading``, set
by the planned executor for the operation it runs): the others are selected as NULL, in
their place, so that a row still becomes its record by position. Fetching and decoding
what no field shows (a report's abstract and timestamps under a list of titles) was 7-12%
of the gateway's CPU on the nested benchmark query, and a fifth of PostgreSQL's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Label, Select, Table, null, select

from datasources.models import Report, ReportType


class InstitutionRecord(NamedTuple):
    id: int
    name: str
    website: str | None
    location: str | None


class AuthorRecord(NamedTuple):
    id: int
    email: str
    institution_id: int | None
    orcid: str | None
    first_name: str
    last_name: str
    name: str


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
    # Its type's (see record_query).
    type_name: str
    type_description: str | None

    @property
    def report_type(self) -> ReportTypeRecord:
        record: ReportTypeRecord = make_record(
            ReportTypeRecord, (self.report_type_id, self.type_name, self.type_description)
        )
        return record


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


# What a record's properties read: the fields behind them.
PROPERTY_FIELDS: dict[type[Any], dict[str, tuple[str, ...]]] = {
    ReportRecord: {"report_type": ("report_type_id", "type_name", "type_description")},
}
RECORD_OF_TABLE: dict[str, type[Any]] = {
    "institutions": InstitutionRecord,
    "authors": AuthorRecord,
    "report_types": ReportTypeRecord,
    "reports": ReportRecord,
    "technologies": TechnologyRecord,
}
REPORTS: Any = Report.__table__
REPORT_TYPES: Any = ReportType.__table__
# Per table: the table joined to it, on which condition, and the columns read from it, named
# as the record's fields. An outer join on the joined table's key: the foreign key makes it
# find a row for every record, so a query that reads none of its columns (a count) leaves
# it out. PostgreSQL would leave it out by itself; SQLite keeps it in a count, and MySQL
# in every statement.
JOINS: dict[str, tuple[Table, ColumnElement[bool], tuple[Label[Any], ...]]] = {
    "reports": (
        REPORT_TYPES,
        REPORTS.c.report_type_id == REPORT_TYPES.c.id,
        (
            REPORT_TYPES.c.name.label("type_name"),
            REPORT_TYPES.c.description.label("type_description"),
        ),
    ),
}
# Queries whose record is kept: reading it off a statement walks its selected columns,
# and the lists' queries are made once and asked about at every page.
QUERIES_KEPT = 256
WIDTH = {record: len(record._fields) for record in RECORD_OF_TABLE.values()}
TABLE_OF_RECORD = {record: table for table, record in RECORD_OF_TABLE.items()}
# A record of values, its fields in order, made without calling the record's ``__new__``:
# ``make_record(AuthorRecord, values)``.
make_record: Callable[..., Any] = tuple.__new__


def fields_behind(record: type[Any], name: str) -> tuple[str, ...] | None:
    """The fields of ``record`` that reading its attribute ``name`` reads; None for a name
    that is not one of its attributes."""
    if name in record._fields:
        return (name,)
    return PROPERTY_FIELDS.get(record, {}).get(name)


def record_type(table_name: str) -> type[Any]:
    return RECORD_OF_TABLE[table_name]


KEY = "id"
# Per table, the fields of its records an operation reads; a table it does not name is read
# whole. A record's id is always read: it keys batches, cache tags and cursors.
Reading = Mapping[str, frozenset[str]]
_reading: ContextVar[Reading | None] = ContextVar("reading", default=None)


@contextmanager
def reading(fields: Reading) -> Iterator[None]:
    """Within this block (and the tasks it starts), reads of records select only
    ``fields``."""
    token = _reading.set(fields)
    try:
        yield
    finally:
        _reading.reset(token)


def fields_read(table_name: str) -> frozenset[str] | None:
    """The fields of ``table_name``'s records that the current operation reads; None for
    every one."""
    current = _reading.get()
    return None if current is None else current.get(table_name)


# What a count reads of the records it counts: none of their fields.
COUNTED: frozenset[str] = frozenset()


def _kept(column: ColumnElement[Any], name: str, fields: frozenset[str] | None) -> Any:
    if fields is None or name in fields or name == KEY:
        return column
    return null().label(name)


@lru_cache(maxsize=QUERIES_KEPT)
def record_columns(table: Table, fields: frozenset[str] | None) -> tuple[ColumnElement[Any], ...]:
    """The columns of ``table`` its record is made of, in the record's order, NULL for
    each field not among ``fields`` (None: every field); a record that joins another table
    reads the rest through ``record_query``."""
    joined = JOINS.get(table.name)
    names = RECORD_OF_TABLE[table.name]._fields
    own = names[: len(names) - len(joined[2])] if joined is not None else names
    return tuple(_kept(table.c[name], name, fields) for name in own)


@lru_cache(maxsize=QUERIES_KEPT)
def record_query(table: Table, fields: frozenset[str] | None) -> Select[Any]:
    """The records of ``table``: its columns, then those its record reads from a joined
    table (each NULL where not among ``fields``)."""
    query = select(*record_columns(table, fields))
    joined = JOINS.get(table.name)
    if joined is None:
        return query
    other, condition, columns = joined
    query = query.add_columns(*(_kept(column, column.name, fields) for column in columns))
    if fields is not None and not any(column.name in fields for column in columns):
        return query
    return query.outerjoin(other, condition)


@lru_cache(maxsize=QUERIES_KEPT)
def record_type_of(query: Select[Any]) -> type[Any]:
    """The record of the table whose ``record_columns`` a query selects (joined tables
    only filter)."""
    return RECORD_OF_TABLE[query.selected_columns[0].table.name]


def to_records(record: type[Any], rows: Sequence[Sequence[Any]], start: int = 0) -> list[Any]:
    """A record of each row, of its columns from ``start`` on."""
    stop = start + WIDTH[record]
    return [make_record(record, row[start:stop]) for row in rows]
