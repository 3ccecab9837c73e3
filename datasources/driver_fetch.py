"""How each backend's driver runs a compiled SELECT by itself, on a connection of the
engine's pool, for the reads that skip SQLAlchemy's execution (datasources/driver_reads.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError

Rows = Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class DriverFetch:
    # The rows of the SQL, on the driver's connection, with the positional values.
    fetch: Callable[[Any, str, Sequence[Any]], Awaitable[Rows]]
    # For an error the driver raised: SQLAlchemy's exception to raise in its place (as
    # SQLAlchemy would have raised for it), and whether the connection failed with it;
    # None for an error that is not the driver's.
    failure: Callable[[BaseException], tuple[type[DBAPIError], bool] | None]
    # Whether the driver gives each column as SQLAlchemy's type of it would: where not,
    # those types' own processors convert the rows (SQLite's dates are text, MySQL's
    # booleans numbers).
    decodes_columns: bool
