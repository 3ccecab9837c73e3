"""A write across PostgreSQL and MongoDB lands in both or neither, whatever fails between."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from pymongo.monitoring import (
    ServerHeartbeatFailedEvent,
    ServerHeartbeatListener,
    ServerHeartbeatStartedEvent,
    ServerHeartbeatSucceededEvent,
)
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.connections import Connections
from core.settings import Settings
from datasources.document_migrations import REPORT_DOCUMENTS
from datasources.report_writes import (
    PENDING,
    Authorship,
    DocumentContent,
    WriteFaults,
    create_report,
    delete_report,
    reconcile_documents,
)
from gateway.app import create_app
from gateway.seed import seed
from tests import interrupted_write
from tests.clients import lifespan_client
from tests.databases import SERVER_CONNECTIONS, needs_server
from tests.ports import own_port

FIELDS = {"title": "Consistent", "report_type_id": 1, "word_count": 10}


class InjectedError(Exception):
    pass


async def _create(connections: Connections, faults: WriteFaults, documents: Any = None) -> int:
    return await create_report(
        engine=connections.engine,
        documents=documents if documents is not None else connections.documents,
        fields=FIELDS,
        authors=[Authorship(author_id=1, is_primary=True)],
        technology_ids=[1],
        content=DocumentContent(tags=["t"]),
        idempotency_key=None,
        faults=faults,
    )


async def _orphans(connections: Connections) -> tuple[int, int]:
    """(reports titled like ours, documents without a report)."""
    async with connections.engine.connect() as connection:
        reports = await connection.scalar(
            text("SELECT count(*) FROM reports WHERE title = 'Consistent'")
        )
        ids = [row.id for row in await connection.execute(text("SELECT id FROM reports"))]
    stray = await connections.documents[REPORT_DOCUMENTS].count_documents({"_id": {"$nin": ids}})
    return int(reports or 0), stray


@pytest.fixture
async def seeded(connections: Connections) -> Connections:
    await seed(connections, reports=10, progress=False)
    return connections


class Heartbeats(ServerHeartbeatListener):
    """How many of a client's checks of its server are under way."""

    def __init__(self) -> None:
        self.running = 0

    def started(self, event: ServerHeartbeatStartedEvent) -> None:
        self.running += 1

    def succeeded(self, event: ServerHeartbeatSucceededEvent) -> None:
        self.running -= 1

    def failed(self, event: ServerHeartbeatFailedEvent) -> None:
        self.running -= 1


async def test_the_mongodb_write_fails(seeded: Connections) -> None:
    heartbeats = Heartbeats()
    dead: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{own_port()}/?directConnection=true",
        serverSelectionTimeoutMS=300,
        event_listeners=[heartbeats],
    )
    with pytest.raises(PyMongoError):
        await _create(seeded, WriteFaults(), documents=dead["gateway"])
    # Closed while a check is connecting, the client would leave that socket open for
    # the collector; after a failed check the next one is at least half a second away.
    while heartbeats.running:  # noqa: ASYNC110 - the driver reports events, not awaitables
        await asyncio.sleep(0.01)
    await dead.close()
    assert await _orphans(seeded) == (0, 0)


@needs_server("no session of its own to end before the commit")
async def test_the_postgres_commit_fails_after_the_mongodb_write(seeded: Connections) -> None:
    own, ended, _ = SERVER_CONNECTIONS[seeded.engine.dialect.name]

    async def kill_session(connection: AsyncConnection) -> None:
        pid = await connection.scalar(text(own))
        async with seeded.engine.connect() as other:
            await other.execute(text(ended), {"pid": pid})

    with pytest.raises(DBAPIError):
        await _create(seeded, WriteFaults(before_commit=kill_session))
    assert await _orphans(seeded) == (0, 0)


async def test_a_failure_between_the_two_writes(seeded: Connections) -> None:
    async def fail(_: AsyncConnection) -> None:
        raise InjectedError

    with pytest.raises(InjectedError):
        await _create(seeded, WriteFaults(after_document_written=fail))
    assert await _orphans(seeded) == (0, 0)


async def test_the_process_dies_between_the_writes_and_the_next_start_cleans_up(
    seeded: Connections, settings: Settings
) -> None:
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")
    } | {
        f"GATEWAY_{name.upper()}": str(getattr(settings, name))
        for name in ("database_url", "mongo_url", "redis_url", "mongo_database")
    }
    died = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.interrupted_write",
        env=environment, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(died.communicate(), 60)
    assert died.returncode == interrupted_write.EXIT_CODE, stderr.decode()
    reports, stray = await _orphans(seeded)
    assert (reports, stray) == (0, 1)
    pending = await seeded.documents[REPORT_DOCUMENTS].find_one({PENDING: {"$exists": True}})
    assert pending is not None
    # Within the grace period an in-flight write is left alone...
    assert await reconcile_documents(engine=seeded.engine, documents=seeded.documents) == (0, 0)
    # ...after it, the orphan goes.
    settled = await reconcile_documents(
        engine=seeded.engine, documents=seeded.documents, grace=timedelta(0)
    )
    assert settled == (0, 1)
    assert await _orphans(seeded) == (0, 0)


async def test_reconciliation_completes_a_write_whose_report_committed(seeded: Connections) -> None:
    documents = seeded.documents[REPORT_DOCUMENTS]
    await documents.update_one({"_id": 2}, {"$set": {PENDING: datetime.now(UTC)}})
    await documents.insert_one({"_id": 99_999, "revision": 1})  # a document with no report
    settled = await reconcile_documents(
        engine=seeded.engine, documents=seeded.documents, grace=timedelta(0)
    )
    assert settled == (1, 1)
    document = await documents.find_one({"_id": 2})
    assert document is not None
    assert PENDING not in document
    assert await documents.find_one({"_id": 99_999}) is None


async def test_a_failed_delete_restores_the_document(seeded: Connections) -> None:
    async def fail(_: AsyncConnection) -> None:
        raise InjectedError

    before = await seeded.documents[REPORT_DOCUMENTS].find_one({"_id": 3})
    with pytest.raises(InjectedError):
        await delete_report(
            engine=seeded.engine, documents=seeded.documents, redis=seeded.redis,
            report_id=3, faults=WriteFaults(before_commit=fail),
        )  # fmt: skip
    assert await seeded.documents[REPORT_DOCUMENTS].find_one({"_id": 3}) == before
    async with seeded.engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM reports WHERE id = 3")) == 1


async def test_a_starting_gateway_reconciles(seeded: Connections, settings: Settings) -> None:
    documents = seeded.documents[REPORT_DOCUMENTS]
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    await documents.insert_one({"_id": 77_777, "revision": 1, PENDING: long_ago})
    async with lifespan_client(create_app(settings)):
        for _ in range(200):
            if await documents.find_one({"_id": 77_777}) is None:
                break
            await asyncio.sleep(0.05)
    assert await documents.find_one({"_id": 77_777}) is None
