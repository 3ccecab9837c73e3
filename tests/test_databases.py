"""The tests' own databases: each test's is as the migrated template is, whatever the test
before it did to its own (tests/databases.py)."""

from __future__ import annotations

from sqlalchemy import func, insert, select, text

from datasources.dialects import relational_engine
from datasources.models import Institution
from tests.databases import BACKEND, Databases


async def _add_institution(databases: Databases, name: str, institution: str) -> int:
    engine = relational_engine(databases.url(name), timeout=30)
    try:
        async with engine.begin() as connection:
            added = await connection.execute(
                insert(Institution).values(name=institution).returning(Institution.id)
            )
            institution_id: int = added.scalar_one()
            return institution_id
    finally:
        await engine.dispose()


async def _institutions(databases: Databases, name: str) -> int:
    engine = relational_engine(databases.url(name), timeout=30)
    try:
        async with engine.connect() as connection:
            return (
                await connection.execute(select(func.count()).select_from(Institution))
            ).scalar_one()
    finally:
        await engine.dispose()


async def test_a_copy_handed_out_again_is_empty_and_counts_from_one(
    databases: Databases, template_database: str
) -> None:
    first = await databases.copy(template_database)
    assert await _add_institution(databases, first, "Institute of Copies") == 1
    await _add_institution(databases, first, "Institute of Templates")
    await databases.done_with(first, template_database)

    second = await databases.copy(template_database)
    try:
        if BACKEND != "sqlite":  # a server's copy is emptied and handed out again
            assert second == first
        assert await _institutions(databases, second) == 0
        assert await _add_institution(databases, second, "Institute of Copies") == 1
    finally:
        await databases.done_with(second, template_database)


async def test_a_copy_whose_schema_a_test_changed_is_not_handed_out_again(
    databases: Databases, template_database: str
) -> None:
    changed = await databases.copy(template_database)
    engine = relational_engine(databases.url(changed), timeout=30)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE institutions ADD COLUMN motto VARCHAR(50)"))
    finally:
        await engine.dispose()
    await databases.done_with(changed, template_database)

    again = await databases.copy(template_database)
    try:
        assert again != changed
        if BACKEND != "sqlite":
            assert await _databases_named(databases, changed) == 0
    finally:
        await databases.done_with(again, template_database)


async def _databases_named(databases: Databases, name: str) -> int:
    listed = {
        "postgresql": ("postgres", "SELECT count(*) FROM pg_database WHERE datname = :name"),
        "mysql": (
            "",
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = :name",
        ),
    }
    database, query = listed[BACKEND]
    engine = relational_engine(databases.url(database), timeout=30)
    try:
        async with engine.connect() as connection:
            found = await connection.execute(text(query), {"name": name})
            count: int = found.scalar_one()
            return count
    finally:
        await engine.dispose()
