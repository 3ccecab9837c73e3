"""Relational databases for the tests, one per test, on whichever backend the suite runs:
PostgreSQL (embedded, or ``GATEWAY_TEST_DATABASE_URL``'s server), MySQL or MariaDB, or
SQLite when that URL is a ``sqlite+aiosqlite:///`` one (its path is then the directory of
the files).

A database at head is a copy of a template migrated once: PostgreSQL clones it on the
server, MySQL creates its tables again from their definitions, SQLite copies its file. On a
server, copies are emptied and handed to the next test rather than dropped: a copy and a
drop cost PostgreSQL about a quarter of a CPU-second, most of it spent on the system
catalogues, and MySQL two dozen statements that each create or remove files; emptying one
costs little. They are emptied row by row rather than truncated: a truncation gives every
table and index new files, about 30 ms of PostgreSQL's CPU for each test, where deleting the
few rows a test wrote costs about a millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import graphlib
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections import defaultdict
from pathlib import Path
from typing import Protocol

import asyncpg
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from datasources.dialects import relational_engine

# The backend the suite runs on: the embedded PostgreSQL unless the URL says otherwise.
BACKEND = make_url(
    os.environ.get("GATEWAY_TEST_DATABASE_URL") or "postgresql://"
).get_backend_name()


# How long a statement of the tests' own on a server may take: a copy of a template waits
# for those that other test processes are making.
ADMINISTERING_TIMEOUT = 60.0


def needs_server(reason: str) -> pytest.MarkDecorator:
    """A test of what a database server does that an embedded file has no part in."""
    return pytest.mark.skipif(BACKEND == "sqlite", reason=f"SQLite has no server: {reason}")


# Per server: a connection's own id, how another ends it, and whether it is still there.
SERVER_CONNECTIONS = {
    "postgresql": (
        "SELECT pg_backend_pid()",
        "SELECT pg_terminate_backend(:pid)",
        "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid",
    ),
    "mysql": (
        "SELECT CONNECTION_ID()",
        "KILL :pid",
        "SELECT count(*) FROM information_schema.processlist WHERE id = :pid",
    ),
}


class Databases(Protocol):
    def url(self, name: str) -> str: ...

    async def create(self, name: str, template: str | None) -> None:
        """Database ``name``, empty or a copy of ``template``."""

    async def drop(self, name: str) -> None: ...

    async def copy(self, template: str) -> str:
        """The name of a database of its caller's own, as ``template`` is."""

    async def done_with(self, name: str, template: str) -> None:
        """Its caller is done with ``copy``'s database ``name``."""

    async def close(self) -> None: ...


def databases_at(url: str) -> Databases:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        directory = Path(parsed.database or ".")
        directory.mkdir(parents=True, exist_ok=True)
        return SqliteFiles(directory)
    if parsed.get_backend_name() == "mysql":
        return MysqlDatabases(
            parsed.set(drivername="mysql+asyncmy").render_as_string(hide_password=False)
        )
    return PostgresDatabases(
        parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    )


# What a copy's schema is, down to its revision: its tables' columns, constraints, indexes,
# triggers and functions.
LAYOUT = """
SELECT md5(string_agg(entry, ';' ORDER BY entry)) FROM (
    SELECT format('%s.%s %s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull) AS entry
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
    WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('%s %s', conname, pg_get_constraintdef(oid)) FROM pg_constraint
    WHERE connamespace = 'public'::regnamespace
    UNION ALL
    SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
    UNION ALL
    SELECT tgname FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'revision ' || version_num FROM alembic_version
) layout
"""
# A copy's tables and the tables each one refers to, for deleting their rows in an order
# that no foreign key refuses.
REFERENCES = """
SELECT quote_ident(c.relname) AS name,
       array_remove(array_agg(quote_ident(referred.relname)), NULL) AS referred
FROM pg_class c
LEFT JOIN pg_constraint f ON f.conrelid = c.oid AND f.contype = 'f' AND f.confrelid <> c.oid
LEFT JOIN pg_class referred ON referred.oid = f.confrelid
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
  AND c.relname <> 'alembic_version'
GROUP BY c.relname
"""
# Every sequence back at its start, as a copy of the template has it.
RESTART_SEQUENCES = """
SELECT setval(format('%I.%I', schemaname, sequencename), start_value, false)
FROM pg_sequences WHERE schemaname = 'public'
"""
# A copy's tables, and the tables each one refers to, separated by commas.
MYSQL_REFERENCES = """
SELECT t.table_name, COALESCE(GROUP_CONCAT(r.referenced_table_name), '')
FROM information_schema.tables t
LEFT JOIN information_schema.referential_constraints r
  ON r.constraint_schema = t.table_schema AND r.table_name = t.table_name
  AND r.referenced_table_name <> t.table_name
WHERE t.table_schema = :name AND t.table_type = 'BASE TABLE'
  AND t.table_name <> 'alembic_version'
GROUP BY t.table_name
"""
# The tables of a copy that count their rows' ids.
MYSQL_COUNTED = """
SELECT table_name FROM information_schema.columns
WHERE table_schema = :name AND extra LIKE '%auto_increment%'
"""
# What a copy's schema is: as LAYOUT, for MySQL.
MYSQL_LAYOUT = """
SELECT MD5(GROUP_CONCAT(entry ORDER BY entry SEPARATOR ';')) FROM (
    SELECT CONCAT_WS(' ', table_name, column_name, column_type, is_nullable) AS entry
    FROM information_schema.columns WHERE table_schema = :name
    UNION ALL
    SELECT CONCAT_WS(' ', table_name, index_name, seq_in_index, column_name, non_unique)
    FROM information_schema.statistics WHERE table_schema = :name
    UNION ALL
    SELECT CONCAT_WS(' ', table_name, constraint_name, check_clause)
    FROM information_schema.check_constraints WHERE constraint_schema = :name
    UNION ALL
    SELECT CONCAT_WS(' ', table_name, constraint_name, referenced_table_name)
    FROM information_schema.referential_constraints WHERE constraint_schema = :name
    UNION ALL
    SELECT CONCAT_WS(' ', event_object_table, trigger_name)
    FROM information_schema.triggers WHERE trigger_schema = :name
) layout
"""


def several_hosts(url: str, hosts: list[str]) -> str:
    """``url``'s PostgreSQL database on each of ``hosts`` (``host:port``), in SQLAlchemy's
    form for asyncpg: a new connection goes to the first that answers and takes writes."""
    return (
        make_url(url)
        .set(host=None, port=None)
        .update_query_dict({"host": hosts, "target_session_attrs": "read-write"})
        .render_as_string(hide_password=False)
    )


def fresh_name() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


class _Copies(ABC):
    """Copies made afresh for every caller, and dropped after it."""

    @abstractmethod
    async def create(self, name: str, template: str | None) -> None: ...

    @abstractmethod
    async def drop(self, name: str) -> None: ...

    async def copy(self, template: str) -> str:
        name = fresh_name()
        await self.create(name, template)
        return name

    async def done_with(self, name: str, template: str) -> None:
        await self.drop(name)


class _ServerDatabases(_Copies):
    """Databases on a server, made and dropped over connections kept for the session (the
    tests share one event loop): an engine per database made and dropped cost each test
    about as much again as its database."""

    # The database the administering connections use.
    ADMINISTERED_FROM = ""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self._engine: AsyncEngine | None = None

    def url(self, name: str) -> str:
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()

    def _administering(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = relational_engine(
                self.url(self.ADMINISTERED_FROM),
                timeout=ADMINISTERING_TIMEOUT,
                isolation_level="AUTOCOMMIT",
            )
        return self._engine


class _ReusedCopies(_ServerDatabases):
    """Copies emptied by the tests that had them and handed to the next one, unless a test
    changed the schema of its copy: that one is dropped."""

    def __init__(self, server_url: str) -> None:
        super().__init__(server_url)
        # By template: the copies emptied, the layout of its copies (columns, constraints,
        # indexes, triggers, revision), and the statements that empty one.
        self._emptied: dict[str, list[str]] = defaultdict(list)
        self._layouts: dict[str, str | None] = {}
        self._emptying: dict[str, list[str]] = {}

    async def copy(self, template: str) -> str:
        if self._emptied[template]:
            return self._emptied[template].pop()
        name = await super().copy(template)
        if template not in self._layouts:
            self._layouts[template], self._emptying[template] = await self._layout_and_emptying(
                name
            )
        return name

    async def done_with(self, name: str, template: str) -> None:
        emptied = await self._emptied_if_unchanged(
            name, self._layouts[template], self._emptying[template]
        )
        if emptied:
            self._emptied[template].append(name)
        else:
            await self.drop(name)

    async def close(self) -> None:
        for names in self._emptied.values():
            for name in names:
                await self.drop(name)
        await super().close()

    @abstractmethod
    async def _layout_and_emptying(self, name: str) -> tuple[str | None, list[str]]:
        """The layout of copy ``name``, and the statements that empty it."""

    @abstractmethod
    async def _emptied_if_unchanged(
        self, name: str, layout: str | None, emptying: list[str]
    ) -> bool:
        """End what the test left connected to copy ``name`` (a gateway process it killed,
        say); then, if its layout is still ``layout``, run ``emptying`` on it."""


def _emptying(tables: list[tuple[str, list[str]]], restart: list[str]) -> list[str]:
    """Statements that delete the rows of ``tables`` (each a quoted name, and the quoted
    names of the tables it refers to), each table's before those of the tables it refers
    to, then ``restart`` its counters."""
    referring = graphlib.TopologicalSorter[str]()
    for table, referred in tables:
        referring.add(table)
        for other in referred:
            referring.add(other, table)
    return [f"DELETE FROM {table}" for table in referring.static_order()] + restart  # noqa: S608


class PostgresDatabases(_ReusedCopies):
    """Each copy keeps the connection that empties it, idle between its tests: a new one
    for each test cost the server about 9 ms of CPU, and the tests 5 ms, over TLS."""

    ADMINISTERED_FROM = "postgres"

    def __init__(self, server_url: str) -> None:
        super().__init__(server_url)
        self._emptiers: dict[str, asyncpg.Connection] = {}

    async def create(self, name: str, template: str | None) -> None:
        # Copied through the log (the default strategy): copying the files instead takes a
        # checkpoint of the whole server before and after, about twice the time.
        clause = f' TEMPLATE "{template}"' if template else ""
        async with self._administering().connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))

    async def drop(self, name: str) -> None:
        emptier = self._emptiers.pop(name, None)
        if emptier is not None:
            emptier.terminate()
        async with self._administering().connect() as connection:
            await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))

    async def close(self) -> None:
        await super().close()
        for emptier in self._emptiers.values():
            emptier.terminate()

    async def _layout_and_emptying(self, name: str) -> tuple[str | None, list[str]]:
        connection = await self._emptier(name)
        tables = [(row["name"], row["referred"]) for row in await connection.fetch(REFERENCES)]
        return await _postgres_layout(connection), _emptying(tables, [RESTART_SEQUENCES])

    async def _emptied_if_unchanged(
        self, name: str, layout: str | None, emptying: list[str]
    ) -> bool:
        connection = await self._emptier(name)
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        if await _postgres_layout(connection) != layout:
            return False
        # One round trip: the simple protocol takes several statements at once.
        await connection.execute(";\n".join(emptying))
        return True

    async def _emptier(self, name: str) -> asyncpg.Connection:
        """The connection kept to copy ``name``, or a new one if there is none or it no
        longer answers: a test may end every other connection to its database."""
        kept = self._emptiers.get(name)
        if kept is not None and not kept.is_closed():
            try:
                await kept.fetchval("SELECT 1")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                kept.terminate()
            else:
                return kept
        url = make_url(self.url(name)).set(drivername="postgresql")
        connection = await asyncpg.connect(url.render_as_string(hide_password=False))
        self._emptiers[name] = connection
        return connection


async def _postgres_layout(connection: asyncpg.Connection) -> str | None:
    try:
        layout: str = await connection.fetchval(LAYOUT)
    except asyncpg.UndefinedTableError:  # a test took the schema down to nothing
        return None
    return layout


class SqliteFiles(_Copies):
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def url(self, name: str) -> str:
        return f"sqlite+aiosqlite:///{self._path(name)}"

    async def create(self, name: str, template: str | None) -> None:
        await self.drop(name)
        if template is not None:
            # A template's engine is disposed of before it is copied: its log is then
            # checkpointed into the file and removed.
            await asyncio.to_thread(shutil.copyfile, self._path(template), self._path(name))

    async def drop(self, name: str) -> None:
        await asyncio.to_thread(self._remove, name)

    def _remove(self, name: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self._path(name)}{suffix}").unlink(missing_ok=True)

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.db"

    async def close(self) -> None:
        pass


class MysqlDatabases(_ReusedCopies):
    """MySQL or MariaDB, which copy no database: a copy of the template is its tables
    created again from their own definitions, and its revision."""

    async def create(self, name: str, template: str | None) -> None:
        async with self._administering().connect() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            await connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            if template is not None:
                tables = (await connection.execute(text(f"SHOW TABLES FROM `{template}`"))).all()
                await connection.execute(text("SET foreign_key_checks = 0"))
                for (table,) in tables:
                    made = await connection.execute(
                        text(f"SHOW CREATE TABLE `{template}`.`{table}`")
                    )
                    await connection.execute(text(f"USE `{name}`"))
                    await connection.execute(text(made.one()[1]))
                await connection.execute(text("SET foreign_key_checks = 1"))
                await connection.execute(
                    text(
                        f"INSERT INTO `{name}`.alembic_version"  # noqa: S608 - a test's name
                        f" SELECT * FROM `{template}`.alembic_version"
                    )
                )

    async def drop(self, name: str) -> None:
        async with self._administering().connect() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))

    async def _layout_and_emptying(self, name: str) -> tuple[str | None, list[str]]:
        async with self._administering().connect() as connection:
            found = await connection.execute(text(MYSQL_REFERENCES), {"name": name})
            tables = [
                (f"`{table}`", [f"`{other}`" for other in referred.split(",") if other])
                for table, referred in found.all()
            ]
            counted = await connection.execute(text(MYSQL_COUNTED), {"name": name})
            restart = [f"ALTER TABLE `{table}` AUTO_INCREMENT = 1" for (table,) in counted.all()]
            return await _mysql_layout(connection, name), _emptying(tables, restart)

    async def _emptied_if_unchanged(
        self, name: str, layout: str | None, emptying: list[str]
    ) -> bool:
        async with self._administering().connect() as connection:
            left = await connection.execute(
                text(
                    "SELECT id FROM information_schema.processlist"
                    " WHERE db = :name AND id <> CONNECTION_ID()"
                ),
                {"name": name},
            )
            for (connection_id,) in left.all():
                with contextlib.suppress(DBAPIError):  # it ended meanwhile
                    await connection.execute(text(f"KILL {int(connection_id)}"))
            if await _mysql_layout(connection, name) != layout:
                return False
            await connection.execute(text(f"USE `{name}`"))
            for statement in emptying:
                await connection.execute(text(statement))
            return True


async def _mysql_layout(connection: AsyncConnection, name: str) -> str | None:
    try:
        revision = await connection.scalar(
            text(f"SELECT version_num FROM `{name}`.alembic_version")  # noqa: S608 - a test's
        )
    except ProgrammingError:  # a test took the schema down to nothing
        return None
    layout = await connection.scalar(text(MYSQL_LAYOUT), {"name": name})
    return f"{layout} revision {revision}"
