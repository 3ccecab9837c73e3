"""The relational backends the gateway runs on, each a module of what it does its own way.

A backend is chosen once, by the engine's dialect; statements are built from the portable
expressions of datasources/portable_sql.py, which each backend's module teaches SQLAlchemy
to write (importing this module registers them all).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from sqlalchemy import Table
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from datasources import mysql_dialect, postgres_dialect, sqlite_dialect
from datasources.driver_fetch import DriverFetch


class RelationalBackend(Protocol):
    async def upsert_rows(
        self,
        connection: AsyncConnection,
        *,
        table: Table,
        rows: Sequence[dict[str, Any]],
        keys: list[str],
    ) -> None:
        """Insert rows, or overwrite the existing ones with the same key columns."""

    async def advance_sequence(self, connection: AsyncConnection, *, table: Table) -> None:
        """Have new rows' ids follow rows inserted with explicit ids."""

    async def upsert_existing_counters(
        self,
        connection: AsyncConnection,
        *,
        snapshots: Table,
        reports: Table,
        counters: Sequence[tuple[int, int, int]],
    ) -> None:
        """Write (report id, views, downloads) snapshots for the reports that still exist."""

    def connection(self, url: URL, timeout: float) -> tuple[URL, dict[str, Any]]:
        """What SQLAlchemy is to read of ``url``, and the driver's other arguments, for a
        connection whose calls take at most ``timeout``."""

    def configure(self, engine: AsyncEngine) -> None:
        """Set up each of the engine's connections as the gateway expects them."""

    def reader(self, engine: AsyncEngine, apart: Callable[..., AsyncEngine]) -> AsyncEngine:
        """The engine for reads of one statement each: ``engine`` with options of its
        own, on the same pool, or ``apart(**options)``, an engine like ``engine`` with a
        pool of its own and SQLAlchemy's ``options``."""

    def migrating(self, connection: AsyncConnection) -> AbstractAsyncContextManager[None]:
        """Around the migrations, on a connection outside any transaction."""

    async def explain(
        self, connection: AsyncConnection, statement: str, parameters: Sequence[Any]
    ) -> Any:
        """The backend's plan of a SELECT (as JSON values)."""

    def plan_hints(self, plan: Any, worth_an_index: int) -> Iterator[str]:
        """What in ``plan`` reads more than ``worth_an_index`` rows where an index would
        read fewer."""

    @property
    def DRIVER_FETCH(self) -> DriverFetch:  # noqa: N802 - a module's constant
        """How the backend's driver runs a compiled read by itself."""


BACKENDS: dict[str, RelationalBackend] = {
    "postgresql": postgres_dialect,
    "sqlite": sqlite_dialect,
    # MariaDB too: SQLAlchemy's MySQL dialect serves both.
    "mysql": mysql_dialect,
}


# What the backends' drivers raise themselves, outside SQLAlchemy's wrapping, when the
# connection rather than the statement failed.
CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    *postgres_dialect.CONNECTION_FAILURES,
    *mysql_dialect.CONNECTION_FAILURES,
    *sqlite_dialect.CONNECTION_FAILURES,
)


def backend_of(bind: AsyncConnection | AsyncEngine) -> RelationalBackend:
    return BACKENDS[bind.dialect.name]


# The asynchronous driver the gateway runs each backend on, and the other names of the
# backends that URLs in the wild use.
DRIVERS = {"postgresql": "asyncpg", "sqlite": "aiosqlite", "mysql": "asyncmy"}
ALIASES = {"postgres": "postgresql", "mariadb": "mysql"}


def backend_named(url: str) -> RelationalBackend:
    """The backend of a database URL; ValueError for one the gateway does not run on."""
    name = make_url(url).get_backend_name()
    try:
        return BACKENDS[name]
    except KeyError:
        supported = ", ".join(sorted(BACKENDS))
        raise ValueError(f"no relational backend {name!r}; supported: {supported}") from None


def driven_url(url: str) -> str:
    """``url``, naming the driver the gateway runs its backend on: ``postgresql://`` and
    ``postgres://`` (as hosting platforms hand them out), ``mysql://``, ``mariadb://`` and
    ``sqlite://`` would otherwise mean SQLAlchemy's default drivers, which are synchronous
    and not installed. ValueError for a backend the gateway does not run on, another
    driver, or an option the backend cannot read."""
    parsed = make_url(url)
    backend = ALIASES.get(parsed.get_backend_name(), parsed.get_backend_name())
    backend_named(f"{backend}://")
    driver = DRIVERS[backend]
    if "+" in parsed.drivername and parsed.get_driver_name() != driver:
        raise ValueError(
            f"the gateway runs {backend} on {driver}: {backend}+{driver}://, not"
            f" {parsed.drivername}://"
        )
    # Options the backend cannot read are refused now, not at the first connection.
    BACKENDS[backend].connection(parsed, timeout=1)
    return parsed.set(drivername=f"{backend}+{driver}").render_as_string(hide_password=False)


def relational_engine(url: str, *, timeout: float, **options: Any) -> AsyncEngine:
    """An engine on ``url`` whose connections are set up as its backend needs (any
    engine the gateway, its migrations or its tests use); ``options`` are SQLAlchemy's."""
    backend = backend_named(url)
    read, arguments = backend.connection(make_url(url), timeout)
    engine = create_async_engine(read, connect_args=arguments, **options)
    backend.configure(engine)
    return engine
