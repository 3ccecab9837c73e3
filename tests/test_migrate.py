from __future__ import annotations

import logging
import warnings
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from pymongo import AsyncMongoClient
from sqlalchemy import Connection, insert, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command
from core.store_urls import StoreUrls
from datasources import document_migrations
from datasources.dialects import relational_engine
from datasources.models import Base, Report, ReportAuthor, ReportType, Technology
from datasources.records import JOINS, RECORD_OF_TABLE
from datasources.sqlite_dialect import SEARCH_TABLE
from gateway import migrate
from tests.databases import BACKEND, fresh_name
from tests.given_stores import stores_given

TABLES = {
    "institutions", "authors", "report_types", "reports", "report_authors", "technologies",
    "report_technologies", "report_counter_snapshots", "api_keys", "idempotency_keys",
    "persisted_queries",
}  # fmt: skip


# The suite's own backend; and in the default run SQLite too, a file that any run can make.
# A run given stores tests what they answer (continuous integration has a run on SQLite).
@pytest.fixture(params=[BACKEND] if stores_given() else sorted({BACKEND, "sqlite"}))
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each relational backend."""
    if request.param != BACKEND:
        return f"sqlite+aiosqlite:///{tmp_path / 'catalogue.db'}"
    url: str = request.getfixturevalue("empty_database_url")
    return url


@pytest.fixture
async def engine(backend_url: str) -> Any:
    created = relational_engine(backend_url, timeout=30)
    yield created
    await created.dispose()


@pytest.fixture
async def documents(store_urls: StoreUrls) -> Any:
    """A MongoDB database with nothing in it, not even the migrations' collections."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(store_urls.mongo_url)
    name = fresh_name()
    yield client[name]
    await client.drop_database(name)
    await client.close()


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    # SQLite's full-text index is a table, and the tables that hold it.
    return {name for name in names if not name.startswith(SEARCH_TABLE)} - {"alembic_version"}


async def test_upgrade_downgrade_and_upgrade_again_on_an_empty_database(
    engine: AsyncEngine, documents: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assert await _tables(engine) == set()

    await migrate.upgrade(engine, documents)
    assert await _tables(engine) == TABLES
    versions = await migrate.versions(engine, documents)
    assert versions.up_to_date
    assert versions.documents == document_migrations.HEAD

    await migrate.downgrade(engine, documents, revision=migrate.BASE)
    assert await _tables(engine) == set()
    assert document_migrations.REPORT_DOCUMENTS not in await documents.list_collection_names()
    versions = await migrate.versions(engine, documents)
    assert (versions.relational, versions.documents) == (None, 0)

    await migrate.upgrade(engine, documents)
    assert await _tables(engine) == TABLES
    assert (await migrate.versions(engine, documents)).up_to_date
    # Nothing the server warned of, and nothing the driver logged for it.
    assert [record.getMessage() for record in caplog.records] == []


async def test_upgrade_is_idempotent(engine: AsyncEngine, documents: Any) -> None:
    await migrate.upgrade(engine, documents)
    await migrate.upgrade(engine, documents)
    assert await document_migrations.upgrade(documents) == []
    assert (await migrate.versions(engine, documents)).up_to_date


async def test_an_upgrade_runs_alembic_only_when_a_store_is_behind(
    engine: AsyncEngine, documents: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrades: list[str] = []
    run_upgrade = command.upgrade

    def counted(config: Config, revision: str) -> None:
        upgrades.append(revision)
        run_upgrade(config, revision)

    monkeypatch.setattr(command, "upgrade", counted)
    await migrate.upgrade(engine, documents)
    await migrate.upgrade(engine, documents)
    assert upgrades == ["head"]
    # Either store behind brings Alembic back: it leaves a relational store at head as it is.
    await documents[document_migrations.MIGRATIONS_COLLECTION].delete_many({})
    await migrate.upgrade(engine, documents)
    await migrate.downgrade(engine, documents, revision="-1")
    await migrate.upgrade(engine, documents)
    assert upgrades == ["head", "head", "head"]
    assert (await migrate.versions(engine, documents)).up_to_date


async def test_models_and_migrations_agree(engine: AsyncEngine, documents: Any) -> None:
    await migrate.upgrade(engine, documents)

    def differences(connection: Connection) -> list[Any]:
        options = migrate.comparison(connection.dialect.name)
        context = MigrationContext.configure(connection, opts=options)
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        with warnings.catch_warnings():
            # SQLite's inspector reads no expression index (the indexes test checks them).
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expr")
            assert await connection.run_sync(differences) == []


# What each backend lists its indexes with: name, then definition.
INDEXES = {
    "postgresql": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "sqlite": "SELECT name, sql FROM sqlite_master WHERE type IN ('index', 'table')",
    "mysql": "SELECT index_name, group_concat(index_type, ' ', column_name ORDER BY seq_in_index)"
    " FROM information_schema.statistics WHERE table_schema = DATABASE() GROUP BY index_name",
}
# The constraints whose indexes a backend does not name after them: SQLite none, MySQL
# no primary key (each is PRIMARY).
UNNAMED = {
    "postgresql": set(),
    "sqlite": {
        "uq_authors_email", "uq_technologies_name_version", "pk_report_authors",
        "pk_report_technologies",
    },
    "mysql": {"pk_report_authors", "pk_report_technologies"},
}  # fmt: skip


async def test_schema_has_the_indexes_queries_rely_on(engine: AsyncEngine, documents: Any) -> None:
    await migrate.upgrade(engine, documents)
    backend = engine.dialect.name
    async with engine.connect() as connection:
        indexes: dict[str, str] = dict((await connection.execute(text(INDEXES[backend]))).all())
    for name in {
        "ix_reports_publication_date", "ix_reports_report_type_id", "uq_authors_email",
        "ix_authors_institution_id", "ix_technologies_name", "ix_report_authors_author_id",
        "ix_report_technologies_technology_id", "uq_report_authors_one_primary",
        "uq_technologies_name_version", "pk_report_authors", "pk_report_technologies",
        "ix_reports_title_order", "ix_reports_word_count_order",
    } - UNNAMED[backend]:  # fmt: skip
        assert name in indexes
    if backend == "mysql":
        # Its stand-ins: a FULLTEXT index, and none on the publication date's expression.
        assert indexes["ix_reports_search"] == "FULLTEXT title,FULLTEXT abstract"
        assert "ix_reports_publication_order" not in indexes
        return
    order = indexes["ix_reports_publication_order"]
    if backend == "sqlite":
        assert "fts5(title, abstract" in indexes["reports_search"]
        assert "coalesce(publication_date, '0001-01-01'), id" in order
    else:
        assert "USING gin (to_tsvector('english'::regconfig" in indexes["ix_reports_search"]
        assert "COALESCE(publication_date, '0001-01-01'::date), id" in order


async def _with_report(engine: AsyncEngine, documents: Any) -> None:
    await migrate.upgrade(engine, documents)
    async with engine.begin() as connection:
        await connection.execute(insert(ReportType).values(id=1, name="Survey"))
        await connection.execute(
            insert(Report).values(id=1, title="t", report_type_id=1, publication_date=date.today())
        )


@pytest.mark.parametrize(
    "values",
    [{"word_count": -1}, {"status": "Deleted"}, {"title": None}, {"report_type_id": 99}],
    ids=["negative word count", "unknown status", "no title", "unknown type"],
)
async def test_report_constraints_reject_bad_rows(
    engine: AsyncEngine, documents: Any, values: dict[str, Any]
) -> None:
    await _with_report(engine, documents)
    row = {"id": 2, "title": "t", "report_type_id": 1, **values}
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(insert(Report).values(**row))


async def test_new_reports_default_to_draft(engine: AsyncEngine, documents: Any) -> None:
    await _with_report(engine, documents)
    async with engine.connect() as connection:
        status = await connection.scalar(text("SELECT status FROM reports WHERE id = 1"))
    assert status == "Draft"


# How each backend names a unique index that a row violates.
VIOLATED = {
    "postgresql": {
        "one_primary": "uq_report_authors_one_primary",
        "name_version": "uq_technologies_name_version",
    },
    "sqlite": {
        "one_primary": "report_authors.report_id",
        "name_version": "technologies.name, technologies.version",
    },
    "mysql": {
        "one_primary": "uq_report_authors_one_primary",
        "name_version": "uq_technologies_name_version",
    },
}


async def test_a_report_has_at_most_one_primary_author(engine: AsyncEngine, documents: Any) -> None:
    await _with_report(engine, documents)
    async with engine.begin() as connection:
        for author_id in (1, 2):
            await connection.execute(
                text(
                    "INSERT INTO authors (id, first_name, last_name, email)"
                    " VALUES (:id, '', 'a', :email)"
                ),
                {"id": author_id, "email": f"a{author_id}@example.org"},
            )
        await connection.execute(
            insert(ReportAuthor).values(report_id=1, author_id=1, is_primary_author=True)
        )
    with pytest.raises(IntegrityError, match=VIOLATED[engine.dialect.name]["one_primary"]):
        async with engine.begin() as connection:
            await connection.execute(
                insert(ReportAuthor).values(report_id=1, author_id=2, is_primary_author=True)
            )


async def test_technology_name_and_version_are_unique(engine: AsyncEngine, documents: Any) -> None:
    await migrate.upgrade(engine, documents)
    row = {"name": "PostgreSQL", "version": "18", "technology_type": "database"}
    async with engine.begin() as connection:
        await connection.execute(insert(Technology).values(**row))
    with pytest.raises(IntegrityError, match=VIOLATED[engine.dialect.name]["name_version"]):
        async with engine.begin() as connection:
            await connection.execute(insert(Technology).values(**row))


async def test_document_migrations_build_indexes_and_record_versions(documents: Any) -> None:
    applied = await document_migrations.upgrade(documents)
    assert [step.version for step in applied] == [1, 2, 3]
    collection = documents[document_migrations.REPORT_DOCUMENTS]
    keys = [dict(index["key"]) for index in (await collection.index_information()).values()]
    assert {"tags": 1} in keys
    recorded = await documents[document_migrations.MIGRATIONS_COLLECTION].find().to_list()
    assert [entry["_id"] for entry in recorded] == [1, 2, 3]


# Tables whose timestamps no field of the API shows.
UNTIMED = {"authors", "institutions"}


def test_records_follow_their_tables_columns() -> None:
    """Rows become records by position: a record's fields are columns of its table, in the
    table's order (only an author's and an institution's timestamps are left out), then the
    columns it reads from a joined table, in the join's order."""
    for name, record in RECORD_OF_TABLE.items():
        joined = [column.name for column in JOINS[name][2]] if name in JOINS else []
        own = list(record._fields[: len(record._fields) - len(joined)])
        assert list(record._fields[len(own) :]) == joined
        columns = [column.name for column in Base.metadata.tables[name].columns]
        assert own == [column for column in columns if column in own]
        left_out = set(columns) - set(own)
        assert left_out == ({"created_at", "updated_at"} if name in UNTIMED else set())


async def _names_and_locations(engine: AsyncEngine) -> tuple[list[Any], list[Any]]:
    async with engine.connect() as connection:
        authors = await connection.execute(
            text("SELECT name, first_name, last_name FROM authors ORDER BY id")
        )
        institutions = await connection.execute(
            text("SELECT country, location FROM institutions ORDER BY id")
        )
        return [tuple(row) for row in authors], [tuple(row) for row in institutions]


async def _columns(engine: AsyncEngine, table: str) -> set[str]:
    async with engine.connect() as connection:
        columns = await connection.run_sync(lambda sync: inspect(sync).get_columns(table))
    return {column["name"] for column in columns}


async def test_revision_0007_splits_names_and_copies_countries_and_reverts(
    engine: AsyncEngine, documents: Any
) -> None:
    await migrate.upgrade(engine, documents, revision="0006")
    # More authors than one batch of the backfill updates.
    names = [
        "Ada Lovelace",
        "Jean de la Fontaine",
        "  Plato ",
        *(f"Given{i} Family{i}" for i in range(2100)),
    ]
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO authors (name, email) VALUES (:name, :email)"),
            [{"name": name, "email": f"{index}@example.org"} for index, name in enumerate(names)],
        )
        await connection.execute(
            text(
                "INSERT INTO institutions (name, country) VALUES ('Inria', 'France'), ('Lab', NULL)"
            )
        )
    await migrate.upgrade(engine, documents, revision="0007")
    authors, institutions = await _names_and_locations(engine)
    assert authors[:3] == [
        ("Ada Lovelace", "Ada", "Lovelace"),
        ("Jean de la Fontaine", "Jean", "de la Fontaine"),
        ("  Plato ", "", "Plato"),
    ]
    assert authors[-1] == ("Given2099 Family2099", "Given2099", "Family2099")
    assert all(first is not None and last is not None for _, first, last in authors)
    assert institutions == [("France", "France"), (None, None)]

    await migrate.downgrade(engine, documents, revision="0006")
    assert {"first_name", "last_name"}.isdisjoint(await _columns(engine, "authors"))
    assert "location" not in await _columns(engine, "institutions")
    async with engine.connect() as connection:
        kept = await connection.scalars(text("SELECT name FROM authors ORDER BY id"))
        assert list(kept) == names

    await migrate.upgrade(engine, documents, revision="0007")
    assert (await _names_and_locations(engine))[0][:3] == authors[:3]


async def test_revision_0008_requires_the_names_computes_the_full_name_and_reverts(
    engine: AsyncEngine, documents: Any
) -> None:
    await migrate.upgrade(engine, documents, revision="0007")
    async with engine.begin() as connection:
        # Written after 0007: by this release (all columns), and by the previous one
        # (the full name and the country alone).
        await connection.execute(
            text(
                "INSERT INTO authors (name, first_name, last_name, email) VALUES"
                " ('Ada Lovelace', 'Ada', 'Lovelace', 'ada@x.example'),"
                " ('Jean de la Fontaine', NULL, NULL, 'jean@x.example')"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO institutions (name, country, location) VALUES"
                " ('Inria', 'France', 'Paris, France'), ('Old Lab', 'UK', NULL)"
            )
        )
    await migrate.upgrade(engine, documents, revision="0008")
    assert "country" not in await _columns(engine, "institutions")
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO authors (first_name, last_name, email) VALUES ('', 'Plato', 'p@x')")
        )
        names = await connection.execute(
            text("SELECT name, first_name, last_name FROM authors ORDER BY id")
        )
        assert [tuple(row) for row in names] == [
            ("Ada Lovelace", "Ada", "Lovelace"),
            ("Jean de la Fontaine", "Jean", "de la Fontaine"),
            ("Plato", "", "Plato"),
        ]
        locations = await connection.scalars(text("SELECT location FROM institutions ORDER BY id"))
        assert list(locations) == ["Paris, France", "UK"]
        with pytest.raises(IntegrityError):
            async with connection.begin_nested():
                await connection.execute(
                    text("INSERT INTO authors (last_name, email) VALUES ('Nameless', 'n@x')")
                )

    await migrate.downgrade(engine, documents, revision="0007")
    authors, institutions = await _names_and_locations(engine)
    assert [name for name, _, _ in authors] == ["Ada Lovelace", "Jean de la Fontaine", "Plato"]
    assert institutions == [("Paris, France", "Paris, France"), ("UK", "UK")]
    async with engine.begin() as connection:  # the full name is the writers' again
        await connection.execute(
            text("UPDATE authors SET name = 'Renamed' WHERE last_name = 'Plato'")
        )

    await migrate.upgrade(engine, documents)
    async with engine.connect() as connection:
        recomputed = await connection.scalars(text("SELECT name FROM authors ORDER BY id"))
        assert list(recomputed) == ["Ada Lovelace", "Jean de la Fontaine", "Plato"]
