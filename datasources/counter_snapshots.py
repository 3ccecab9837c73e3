"""Copying Redis's live counters into PostgreSQL, so that SQL can filter and order by them.

Reads of a report's counters always go to Redis; the snapshot only serves ordering, and
is as old as the refresh interval at most.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources.counters import all_counters
from datasources.models import Report, ReportCounterSnapshot
from datasources.postgres_dialect import upsert_existing_counters

BATCH_SIZE = 5000
SNAPSHOTS: Any = ReportCounterSnapshot.__table__
REPORTS: Any = Report.__table__


async def snapshot_counters(*, redis: Redis, engine: AsyncEngine) -> int:
    """Refresh every snapshot from Redis; returns how many counters were read."""
    counters = await all_counters(redis=redis)
    async with engine.begin() as connection:
        for start in range(0, len(counters), BATCH_SIZE):
            await upsert_existing_counters(
                connection,
                snapshots=SNAPSHOTS,
                reports=REPORTS,
                counters=counters[start : start + BATCH_SIZE],
            )
    return len(counters)
