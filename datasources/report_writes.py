"""Writing reports across PostgreSQL and MongoDB so that a write lands in both or in neither.

A report's row and its document are written inside the PostgreSQL transaction: the
document first, marked ``PENDING``, then the commit. A failure before the commit rolls
the transaction back and deletes the document (compensation). A process that dies in
between leaves a pending document whose report never committed; ``reconcile_documents``
removes those (and completes the ones whose report did commit) on the next start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis
from sqlalchemy import delete, insert, literal, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from datasources.channels import on_server
from datasources.counters import (
    LEADERBOARDS_CHANNEL,
    Counter,
    counters_channel,
    leaderboard_key,
    stats_key,
)
from datasources.document_migrations import REPORT_DOCUMENTS
from datasources.models import (
    IdempotencyKey,
    Report,
    ReportAuthor,
    ReportTechnology,
)
from datasources.portable_sql import equals_any
from datasources.reports import ReportParent

REPORTS: Any = Report.__table__
AUTHORSHIPS: Any = ReportAuthor.__table__
REPORT_TECHNOLOGIES: Any = ReportTechnology.__table__
IDEMPOTENCY: Any = IdempotencyKey.__table__
PENDING = "pending_since"
Database = AsyncDatabase[dict[str, Any]]
Hook = Callable[[AsyncConnection], Awaitable[None]]
# The parents a report is listed under (its type, authors and technologies): what a write
# to it changes the lists of, before and after the write.
Parents = frozenset[tuple[ReportParent, int]]


def report_channel(report_id: int) -> str:
    """Published to after a write changed the report (or deleted it)."""
    return f"live:report:{report_id}"


@dataclass(frozen=True)
class Authorship:
    author_id: int
    is_primary: bool


@dataclass(frozen=True)
class DocumentContent:
    sections: list[dict[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    references: list[dict[str, str | None]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteFaults:
    """Where a test may make a write fail on purpose, between its steps."""

    after_document_written: Hook | None = None
    before_commit: Hook | None = None


NO_FAULTS = WriteFaults()


async def existing_ids(*, engine: AsyncEngine, table: Any, ids: Sequence[int]) -> set[int]:
    if not ids:
        return set()
    async with engine.connect() as connection:
        rows = await connection.execute(select(table.c.id).where(equals_any(table.c.id, ids)))
        return {row.id for row in rows}


async def idempotent_result(*, engine: AsyncEngine, key: str) -> tuple[str, int] | None:
    """The operation and report of an earlier write with this key, if there was one."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(select(IDEMPOTENCY).where(IDEMPOTENCY.c.key == key))
        ).first()
    return None if row is None else (row.operation, row.report_id)


def parents_given(
    report_type_id: int | None,
    authors: Sequence[Authorship] | None,
    technology_ids: Sequence[int] | None,
) -> Parents:
    """The parents a write gives a report (None: left as they were)."""
    return frozenset((
        *(((ReportParent.REPORT_TYPE, report_type_id),) if report_type_id is not None else ()),
        *((ReportParent.AUTHOR, author.author_id) for author in authors or ()),
        *((ReportParent.TECHNOLOGY, technology_id) for technology_id in technology_ids or ()),
    ))  # fmt: skip


async def _locked_parents(connection: AsyncConnection, report_id: int) -> Parents | None:
    """The report's parents, its row locked until the transaction ends (None if there is
    no such report). Every write to a report's links first writes or locks its row, so
    they cannot change before then."""
    found = (
        await connection.execute(
            select(REPORTS.c.report_type_id).where(REPORTS.c.id == report_id).with_for_update()
        )
    ).first()
    if found is None:
        return None
    links = await connection.execute(
        union_all(
            select(literal(ReportParent.AUTHOR.value), AUTHORSHIPS.c.author_id).where(
                AUTHORSHIPS.c.report_id == report_id
            ),
            select(
                literal(ReportParent.TECHNOLOGY.value), REPORT_TECHNOLOGIES.c.technology_id
            ).where(REPORT_TECHNOLOGIES.c.report_id == report_id),
        )
    )
    return parents_given(found.report_type_id, (), ()) | {
        (ReportParent(kind), parent_id) for kind, parent_id in links
    }


async def _write_links(
    connection: AsyncConnection,
    report_id: int,
    authors: Sequence[Authorship] | None,
    technology_ids: Sequence[int] | None,
) -> None:
    if authors is not None:
        await connection.execute(delete(AUTHORSHIPS).where(AUTHORSHIPS.c.report_id == report_id))
        await connection.execute(
            insert(AUTHORSHIPS),
            [
                {"report_id": report_id, "author_id": author.author_id,
                 "is_primary_author": author.is_primary, "position": position}
                for position, author in enumerate(authors)
            ],
        )  # fmt: skip
    if technology_ids is not None:
        await connection.execute(
            delete(REPORT_TECHNOLOGIES).where(REPORT_TECHNOLOGIES.c.report_id == report_id)
        )
        if technology_ids:
            await connection.execute(
                insert(REPORT_TECHNOLOGIES),
                [{"report_id": report_id, "technology_id": tid} for tid in technology_ids],
            )


async def create_report(
    *,
    engine: AsyncEngine,
    documents: Database,
    fields: dict[str, Any],
    authors: Sequence[Authorship],
    technology_ids: Sequence[int],
    content: DocumentContent,
    idempotency_key: str | None,
    faults: WriteFaults = NO_FAULTS,
) -> int:
    collection = documents[REPORT_DOCUMENTS]
    report_id: int | None = None
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            report_id = await connection.scalar(
                insert(REPORTS).values(**fields).returning(REPORTS.c.id)
            )
            assert report_id is not None
            await _write_links(connection, report_id, authors, technology_ids)
            if idempotency_key is not None:
                await connection.execute(
                    insert(IDEMPOTENCY).values(
                        key=idempotency_key, operation="createReport", report_id=report_id
                    )
                )
            now = datetime.now(UTC)
            await collection.insert_one({
                "_id": report_id, **content.__dict__, "revision": 1, "updated_at": now,
                PENDING: now,
            })  # fmt: skip
            if faults.after_document_written:
                await faults.after_document_written(connection)
            if faults.before_commit:
                await faults.before_commit(connection)
            await transaction.commit()
        except BaseException:
            if transaction.is_active:
                await transaction.rollback()
            if report_id is not None:
                await collection.delete_one({"_id": report_id})
            raise
    # The report is committed; the marker only tells reconciliation so. If this fails,
    # reconciliation clears it later.
    await collection.update_one({"_id": report_id}, {"$unset": {PENDING: ""}})
    return report_id


async def update_report(
    *,
    engine: AsyncEngine,
    report_id: int,
    fields: dict[str, Any],
    authors: Sequence[Authorship] | None,
    technology_ids: Sequence[int] | None,
) -> Parents | None:
    """Change the given columns and links: the report's parents before and after, or None
    if there is no such report."""
    async with engine.begin() as connection:
        before = await _locked_parents(connection, report_id)
        if before is None:
            return None
        await connection.execute(
            update(REPORTS)
            .where(REPORTS.c.id == report_id)
            .values(**fields, updated_at=datetime.now(UTC))
        )
        await _write_links(connection, report_id, authors, technology_ids)
    return before | parents_given(fields.get("report_type_id"), authors, technology_ids)


async def move_status(
    *, engine: AsyncEngine, report_id: int, current: str, target: str, publish_on: date | None
) -> Parents | None:
    """Move from ``current`` to ``target`` unless someone moved it first: the report's
    parents, or None if it was not moved."""
    values: dict[str, Any] = {"status": target, "updated_at": datetime.now(UTC)}
    if publish_on is not None:
        values["publication_date"] = publish_on
    async with engine.begin() as connection:
        # Rows matched, on every backend (MariaDB has no UPDATE … RETURNING).
        moved = await connection.execute(
            update(REPORTS)
            .where(REPORTS.c.id == report_id, REPORTS.c.status == current)
            .values(**values)
        )
        return None if moved.rowcount == 0 else await _locked_parents(connection, report_id)


async def delete_report(
    *,
    engine: AsyncEngine,
    documents: Database,
    redis: Redis,
    report_id: int,
    faults: WriteFaults = NO_FAULTS,
) -> Parents | None:
    """Delete the row (with its links), the document and the counters: the parents it was
    listed under, or None if there was no such report."""
    collection = documents[REPORT_DOCUMENTS]
    async with engine.connect() as connection:
        transaction = await connection.begin()
        removed: dict[str, Any] | None = None
        try:
            parents = await _locked_parents(connection, report_id)
            if parents is None:
                await transaction.rollback()
                return None
            await connection.execute(delete(REPORTS).where(REPORTS.c.id == report_id))
            removed = await collection.find_one_and_delete({"_id": report_id})
            if faults.before_commit:
                await faults.before_commit(connection)
            await transaction.commit()
        except BaseException:
            if transaction.is_active:
                await transaction.rollback()
            if removed is not None:
                await collection.replace_one({"_id": report_id}, removed, upsert=True)
            raise
    pipeline = redis.pipeline(transaction=True)
    pipeline.delete(stats_key(report_id))
    for counter in Counter:
        pipeline.zrem(leaderboard_key(counter), str(report_id))
    pipeline.publish(on_server(redis, counters_channel(report_id)), "")
    pipeline.publish(on_server(redis, LEADERBOARDS_CHANNEL), str(report_id))
    await pipeline.execute()
    return parents


async def update_document(
    *,
    documents: Database,
    report_id: int,
    expected_revision: int | None,
    changes: dict[str, Any],
) -> int | None:
    """Apply ``changes`` if the document is at ``expected_revision`` (None: it must not exist
    yet, or any revision when it does not matter); the new revision, or None on a conflict."""
    collection = documents[REPORT_DOCUMENTS]
    now = datetime.now(UTC)
    current = await collection.find_one({"_id": report_id}, {"revision": 1})
    if current is None:
        if expected_revision not in (None, 0):
            return None
        document = {**DocumentContent().__dict__, **changes, "revision": 1, "updated_at": now}
        await collection.insert_one({"_id": report_id, **document})
        return 1
    revision = int(current["revision"])
    if expected_revision is not None and expected_revision != revision:
        return None
    result = await collection.update_one(
        {"_id": report_id, "revision": revision},
        {"$set": {**changes, "updated_at": now, "revision": revision + 1}},
    )
    return revision + 1 if result.modified_count == 1 else None


async def reconcile_documents(
    *,
    engine: AsyncEngine,
    documents: Database,
    grace: timedelta = timedelta(minutes=1),
    stop: asyncio.Event | None = None,
) -> tuple[int, int]:
    """Finish what a dead process left: (documents completed, orphan documents removed).

    A pending document older than ``grace`` whose report exists is completed; one whose
    report does not exist, or any document without a report, is removed. Setting ``stop``
    ends the sweep after the current batch.
    """
    collection = documents[REPORT_DOCUMENTS]
    cutoff = datetime.now(UTC) - grace
    completed = removed = 0
    batch: list[dict[str, Any]] = []

    async def settle(entries: list[dict[str, Any]]) -> None:
        nonlocal completed, removed
        reports = await existing_ids(
            engine=engine, table=REPORTS, ids=[entry["_id"] for entry in entries]
        )
        for entry in entries:
            pending = entry.get(PENDING)
            if entry["_id"] in reports:
                if pending is not None:
                    await collection.update_one({"_id": entry["_id"]}, {"$unset": {PENDING: ""}})
                    completed += 1
            elif pending is None or _aware(pending) < cutoff:
                await collection.delete_one({"_id": entry["_id"]})
                removed += 1

    async with collection.find({}, {"_id": 1, PENDING: 1}).sort("_id", 1) as cursor:
        async for entry in cursor:
            batch.append(entry)
            if len(batch) == 1000:
                await settle(batch)
                batch = []
                if stop is not None and stop.is_set():
                    return completed, removed
    if batch:
        await settle(batch)
    return completed, removed


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
