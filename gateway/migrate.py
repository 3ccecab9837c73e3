"""Schema migrations of both stores that have one: Alembic for PostgreSQL, versioned
index and validator steps for MongoDB."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Index

from alembic import command
from datasources import document_migrations
from datasources.dialects import backend_of
from datasources.sqlite_dialect import SEARCH_TABLE

if TYPE_CHECKING:
    from collections.abc import Callable

    from pymongo.asynchronous.database import AsyncDatabase
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BASE = "base"


@dataclass(frozen=True)
class SchemaVersions:
    relational: str | None
    relational_head: str | None
    documents: int
    documents_head: int

    @property
    def up_to_date(self) -> bool:
        return self.relational == self.relational_head and self.documents == self.documents_head


# MySQL's stand-in for the partial index of one primary author per report (revision 0001).
PRIMARY_REPORT_ID = "primary_report_id"


def compared_by_autogenerate(
    item: object, name: str | None, kind: str, reflected: bool, counterpart: object
) -> bool:
    """Leave out of autogenerate's comparison what each backend builds its own way: the
    tests check those definitions instead.

    - Expression indexes: PostgreSQL reflects an expression in its own canonical form
      (casts added, literals inlined) that never matches the expression as SQLAlchemy
      compiles it, and MySQL has none.
    - SQLite's full-text index: a virtual table and its own tables (revision 0009).
    - MySQL's column and index standing in for a partial index (revision 0001).
    """
    if kind == "index" and isinstance(item, Index):
        indexes = [item, counterpart] if isinstance(counterpart, Index) else [item]
        columns = {column.name for index in indexes for column in index.columns}
        simple = all(isinstance(expression, Column) for expression in item.expressions)
        return simple and PRIMARY_REPORT_ID not in columns
    if kind == "column":
        return name != PRIMARY_REPORT_ID
    return not (kind == "table" and reflected and (name or "").startswith(SEARCH_TABLE))


def comparison(backend: str) -> dict[str, Any]:
    """How models and migrations are compared on ``backend`` (alembic's autogenerate, and
    a test). Server defaults are not compared on MySQL, which writes them back in words
    of its own (``current_timestamp()`` for ``now()``, ``0`` for ``false``); tests of
    the defaults' effects cover it there."""
    return {
        "compare_type": True,
        "compare_server_default": backend != "mysql",
        "include_object": compared_by_autogenerate,
    }


def alembic_config() -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    return config


async def _on_connection(engine: AsyncEngine, action: Callable[[Config], None]) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        action(config)

    async with (
        engine.connect() as connection,
        backend_of(connection).migrating(connection),
        connection.begin(),
    ):
        await connection.run_sync(run)


@functools.cache
def relational_head() -> str | None:
    """The revision the relational migrations end at. Finding it loads every migration
    script, and they do not change while the process runs."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(
    engine: AsyncEngine, documents: AsyncDatabase[dict[str, Any]], *, revision: str = "head"
) -> None:
    # Every start but the first finds the stores at head: reading their versions costs a
    # query each, where Alembic's upgrade loads its environment and every script first.
    if revision == "head" and (await versions(engine, documents)).up_to_date:
        return
    await _on_connection(engine, lambda config: command.upgrade(config, revision))
    await document_migrations.upgrade(documents)


async def downgrade(
    engine: AsyncEngine, documents: AsyncDatabase[dict[str, Any]], *, revision: str
) -> None:
    """Downgrade the relational schema; down to ``base``, revert the document store's too."""
    await _on_connection(engine, lambda config: command.downgrade(config, revision))
    if revision == BASE:
        await document_migrations.downgrade(documents)


async def versions(engine: AsyncEngine, documents: AsyncDatabase[dict[str, Any]]) -> SchemaVersions:
    def relational(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        current = await connection.run_sync(relational)
    return SchemaVersions(
        relational=current,
        relational_head=relational_head(),
        documents=await document_migrations.current_version(documents),
        documents_head=document_migrations.HEAD,
    )
