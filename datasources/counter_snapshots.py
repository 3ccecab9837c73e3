"""Copying Redis's live counters into PostgreSQL, so that SQL can filter and order by them,
and back again when Redis has lost them.

Reads of a report's counters always go to Redis; the snapshot serves ordering, and is as
old as the refresh interval at most. It is also what counters come back from when Redis
returns empty: what was counted since the last copy is lost, no more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources.channels import on_server
from datasources.counters import (
    LEADERBOARDS_CHANNEL,
    PRESENT,
    STATS_PREFIX,
    STATS_SUFFIX,
    Counter,
    CountersLostError,
    all_counters,
    counters_channel,
    leaderboard_key,
)
from datasources.dialects import backend_of
from datasources.models import Report, ReportCounterSnapshot

BATCH_SIZE = 5000
SNAPSHOTS: Any = ReportCounterSnapshot.__table__
REPORTS: Any = Report.__table__
T = TypeVar("T")

# The snapshot written back, in one script so that no increment lands in between (they
# wait for the mark, see datasources/counters.py), and announced. Counters found without
# the mark (written before there was one) are kept as they are, and marked.
_RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) > 0 then
  redis.call('SET', KEYS[1], '1')
  return 2
end
for i = 7, #ARGV, 3 do
  local id, views, downloads = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('HSET', ARGV[1] .. id .. ARGV[2], ARGV[5], views, ARGV[6], downloads)
  redis.call('ZADD', KEYS[2], views, id)
  redis.call('ZADD', KEYS[3], downloads, id)
  redis.call('PUBLISH', ARGV[3] .. id, '')
end
redis.call('SET', KEYS[1], '1')
redis.call('PUBLISH', ARGV[4], '')
return 1
"""


async def snapshot_counters(*, redis: Redis, engine: AsyncEngine) -> int:
    """Refresh every snapshot from Redis; returns how many counters were read."""
    counters = await restored(redis=redis, engine=engine, read=lambda: all_counters(redis=redis))
    async with engine.begin() as connection:
        for start in range(0, len(counters), BATCH_SIZE):
            await backend_of(connection).upsert_existing_counters(
                connection,
                snapshots=SNAPSHOTS,
                reports=REPORTS,
                counters=counters[start : start + BATCH_SIZE],
            )
    return len(counters)


async def restore_counters(*, redis: Redis, engine: AsyncEngine) -> bool:
    """Write the snapshot back into Redis if it holds no counters; whether it did."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(SNAPSHOTS.c.report_id, SNAPSHOTS.c.views, SNAPSHOTS.c.downloads)
        )
        values = [str(value) for row in rows for value in row]
    channel_prefix = on_server(redis, counters_channel(0)).removesuffix("0")
    restored_now = await redis.eval(
        _RESTORE,
        3,
        PRESENT,
        leaderboard_key(Counter.VIEWS),
        leaderboard_key(Counter.DOWNLOADS),
        STATS_PREFIX,
        STATS_SUFFIX,
        channel_prefix,
        on_server(redis, LEADERBOARDS_CHANNEL),
        Counter.VIEWS.value,
        Counter.DOWNLOADS.value,
        *values,
    )
    return bool(restored_now == 1)


async def restored(*, redis: Redis, engine: AsyncEngine, read: Callable[[], Awaitable[T]]) -> T:
    """``read``'s answer, the counters restored first if Redis has lost them. With
    PostgreSQL unavailable they cannot be, and are unavailable themselves."""
    try:
        return await read()
    except CountersLostError:
        try:
            await restore_counters(redis=redis, engine=engine)
        except (DBAPIError, OSError) as error:
            raise CountersLostError("the counters cannot be restored now") from error
        return await read()
