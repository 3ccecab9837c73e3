"""Versioned changes to the document store: its indexes and validators.

MongoDB has no schema to migrate, but what it needs to be fast and safe (indexes, a
validator) must be built the same way everywhere, in order, once. Applied versions are
recorded in ``MIGRATIONS_COLLECTION`` rather than read back from the server, because
servers that speak the protocol differ in how they report index names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from pymongo import ASCENDING, TEXT
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

REPORT_DOCUMENTS = "report_documents"
MIGRATIONS_COLLECTION = "schema_migrations"

Database: TypeAlias = AsyncDatabase[dict[str, Any]]
Step: TypeAlias = Callable[[Database], Awaitable[None]]

REPORT_DOCUMENT_SCHEMA: dict[str, Any] = {
    "bsonType": "object",
    "required": ["_id", "revision"],
    "properties": {
        "_id": {"bsonType": ["int", "long"], "description": "the report's id in PostgreSQL"},
        "sections": {
            "bsonType": "array",
            "items": {
                "bsonType": "object",
                "required": ["heading", "body"],
                "properties": {"heading": {"bsonType": "string"}, "body": {"bsonType": "string"}},
            },
        },
        "tags": {"bsonType": "array", "items": {"bsonType": "string"}},
        "references": {"bsonType": "array", "items": {"bsonType": "object"}},
        "metadata": {"bsonType": "object"},
        "revision": {"bsonType": ["int", "long"], "minimum": 1},
        "updated_at": {"bsonType": "date"},
    },
}


@dataclass(frozen=True)
class DocumentMigration:
    version: int
    description: str
    upgrade: Step
    downgrade: Step


async def _create_collection(database: Database) -> None:
    if REPORT_DOCUMENTS not in await database.list_collection_names():
        await database.create_collection(REPORT_DOCUMENTS)
    await database.command(
        "collMod", REPORT_DOCUMENTS, validator={"$jsonSchema": REPORT_DOCUMENT_SCHEMA},
        validationLevel="moderate",
    )  # fmt: skip


async def _drop_collection(database: Database) -> None:
    await database.drop_collection(REPORT_DOCUMENTS)


async def _create_tag_index(database: Database) -> None:
    await database[REPORT_DOCUMENTS].create_index([("tags", ASCENDING)], name="tags")


async def _drop_tag_index(database: Database) -> None:
    await _drop_index_if_present(database, "tags")


async def _create_section_text_index(database: Database) -> None:
    # Text indexes are a MongoDB feature that not every server of the protocol has;
    # without one, search over sections falls back to a scan, which is still correct.
    try:
        await database[REPORT_DOCUMENTS].create_index(
            [("sections.body", TEXT)], name="sections_text", default_language="english"
        )
    except OperationFailure:
        return


async def _drop_section_text_index(database: Database) -> None:
    await _drop_index_if_present(database, "sections_text")


async def _drop_index_if_present(database: Database, name: str) -> None:
    try:
        await database[REPORT_DOCUMENTS].drop_index(name)
    except OperationFailure:
        return


MIGRATIONS: tuple[DocumentMigration, ...] = (
    DocumentMigration(
        1, "report_documents collection and validator", _create_collection, _drop_collection
    ),
    DocumentMigration(2, "index on tags", _create_tag_index, _drop_tag_index),
    DocumentMigration(
        3, "text index on section bodies", _create_section_text_index, _drop_section_text_index
    ),
)
HEAD = MIGRATIONS[-1].version


async def current_version(database: Database) -> int:
    latest = await database[MIGRATIONS_COLLECTION].find_one(sort=[("_id", -1)])
    return int(latest["_id"]) if latest else 0


async def upgrade(database: Database, *, target: int = HEAD) -> list[DocumentMigration]:
    applied = []
    current = await current_version(database)
    for migration in MIGRATIONS:
        if current < migration.version <= target:
            await migration.upgrade(database)
            await database[MIGRATIONS_COLLECTION].insert_one({
                "_id": migration.version,
                "description": migration.description,
                "applied_at": datetime.now(UTC),
            })  # fmt: skip
            applied.append(migration)
    return applied


async def downgrade(database: Database, *, target: int = 0) -> list[DocumentMigration]:
    reverted = []
    current = await current_version(database)
    for migration in reversed(MIGRATIONS):
        if target < migration.version <= current:
            await migration.downgrade(database)
            await database[MIGRATIONS_COLLECTION].delete_one({"_id": migration.version})
            reverted.append(migration)
    return reverted
