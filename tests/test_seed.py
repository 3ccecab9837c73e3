from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import text

from core.connections import Connections, open_connections
from core.settings import Settings
from core.store_urls import StoreUrls
from datasources.counters import Counter as StatsCounter
from datasources.counters import leaderboard_key, stats_key
from datasources.document_migrations import REPORT_DOCUMENTS
from gateway import migrate
from gateway.seed import seed
from tests.faults import HeldStoreCall

TABLES = (
    "institutions", "authors", "report_types", "technologies", "reports", "report_authors",
    "report_technologies",
)  # fmt: skip
# Batches of 100 instead of the seed's 1,000: what crosses from one batch to the next is
# tested on a fifth of the reports (the seed's output does not depend on the batch size).
BATCH_SIZE = 100
REPORTS = 250  # two whole batches and part of a third


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.seed.BATCH_SIZE", BATCH_SIZE)


async def fingerprint(connections: Connections) -> str:
    """A digest of everything the seed writes, in all three stores."""
    digest = hashlib.sha256()
    async with connections.engine.connect() as connection:
        for table in TABLES:
            rows = await connection.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))  # noqa: S608
            digest.update(json.dumps([list(row) for row in rows], default=str).encode())
    documents = connections.documents[REPORT_DOCUMENTS].find(sort=[("_id", 1)])
    digest.update(json.dumps(await documents.to_list(), default=str, sort_keys=True).encode())
    pipeline = connections.redis.pipeline(transaction=False)
    for report_id in range(1, REPORTS + 1):
        pipeline.hgetall(stats_key(report_id))
    for counter in StatsCounter:
        pipeline.zrange(leaderboard_key(counter), 0, -1, withscores=True)
    digest.update(repr(await pipeline.execute()).encode())
    return digest.hexdigest()


async def test_seed_writes_a_consistent_catalogue(connections: Connections) -> None:
    counts = await seed(connections, reports=REPORTS, progress=False)
    assert counts["reports"] == REPORTS
    assert counts["documents"] == REPORTS

    async with connections.engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM reports")) == REPORTS
        authorships = (
            await connection.execute(
                text(
                    "SELECT report_id, count(*), sum(CASE WHEN is_primary_author THEN 1 END) "
                    "FROM report_authors GROUP BY report_id"
                )
            )
        ).all()
        orphans = await connection.scalar(
            text(
                "SELECT count(*) FROM authors a LEFT JOIN institutions i"
                " ON i.id = a.institution_id WHERE a.institution_id IS NOT NULL AND i.id IS NULL"
            )
        )
        # New rows after a seed get fresh ids, not ones the seed already used.
        next_id = await connection.scalar(
            text(
                "INSERT INTO reports (title, report_type_id)"
                " SELECT 'after the seed', min(id) FROM report_types RETURNING id"
            )
        )
    assert len(authorships) == REPORTS
    assert all(1 <= total <= 5 and primary == 1 for _, total, primary in authorships)
    assert Counter(total for _, total, _ in authorships).keys() == {1, 2, 3, 4, 5}
    assert orphans == 0
    assert next_id == REPORTS + 1

    documents = connections.documents[REPORT_DOCUMENTS]
    assert await documents.count_documents({}) == REPORTS
    document = await documents.find_one({"_id": 1})
    assert document is not None
    assert document["sections"]
    assert document["tags"]
    assert document["revision"] == 1
    assert {"heading", "body"} <= set(document["sections"][0])

    stats = await connections.redis.hgetall(stats_key(1))
    assert set(stats) == {b"views", b"downloads"}
    assert await connections.redis.zcard(leaderboard_key(StatsCounter.VIEWS)) == REPORTS


async def test_seed_is_idempotent(connections: Connections) -> None:
    await seed(connections, reports=REPORTS, progress=False)
    first = await fingerprint(connections)
    await seed(connections, reports=REPORTS, progress=False)
    assert await fingerprint(connections) == first


async def test_seed_is_deterministic_across_databases_and_batch_sizes(
    connections: Connections,
    settings: Settings,
    empty_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await seed(connections, reports=REPORTS, random_seed=7, progress=False)
    first = await fingerprint(connections)

    other_settings = settings.model_copy(
        update={
            "database_url": empty_database_url,
            "mongo_database": settings.mongo_database + "_b",
        }
    )
    other = open_connections(
        other_settings,
        StoreUrls(empty_database_url, other_settings.mongo_url, other_settings.redis_url),
    )
    try:
        await migrate.upgrade(other.engine, other.documents)
        await other.redis.flushdb()
        monkeypatch.setattr("gateway.seed.BATCH_SIZE", REPORTS)
        await seed(other, reports=REPORTS, random_seed=7, progress=False)
        assert await fingerprint(other) == first
        await seed(other, reports=REPORTS, random_seed=8, progress=False)
        assert await fingerprint(other) != first
    finally:
        await other.mongo.drop_database(other_settings.mongo_database)
        await other.close()


async def test_reseeding_with_another_seed_keeps_one_primary_author(
    connections: Connections,
) -> None:
    await seed(connections, reports=300, random_seed=1, progress=False)
    await seed(connections, reports=300, random_seed=2, progress=False)
    async with connections.engine.connect() as connection:
        primaries: Any = await connection.execute(
            text("SELECT sum(CASE WHEN is_primary_author THEN 1 END) FROM report_authors "
                 "GROUP BY report_id")
        )  # fmt: skip
        assert {count for (count,) in primaries} == {1}


class CountersRefusedError(Exception):
    pass


async def test_a_seed_that_one_store_refuses_ends_after_its_writes_to_the_others(
    connections: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    relational = HeldStoreCall(None)
    monkeypatch.setattr("gateway.seed._write_relational", lambda *_: relational())

    async def refuse(**_: Any) -> None:
        await relational.started.wait()
        raise CountersRefusedError

    monkeypatch.setattr("gateway.seed.set_report_counters", refuse)
    seeding = asyncio.create_task(seed(connections, reports=2, progress=False))
    # The command that ran the seed would close the clients as soon as it ended: a write
    # still running then would give its connection back to a pool already disposed of.
    done, _ = await asyncio.wait({seeding}, timeout=0.5)
    assert not done
    relational.release.set()
    with pytest.raises(CountersRefusedError):
        await seeding
    assert relational.events == ["started", "finished"]
