"""Live counters in Redis: one hash per report, and a sorted set per leaderboard that holds
the same numbers.

Counters change without a mutation, so every change is published as well, from the
script that makes it (see ``record``): on the report's channel and on the leaderboards'.
Messages say only that something changed; subscribers read the values, so one that
missed a message or fell behind reads the latest values, never an old one.

Redis may lose its data (a restart without persistence, a flush). A key marks that the
counters are in Redis: every read and increment checks it in the same round trip, and
where it is missing, the counters are restored from PostgreSQL's snapshot (see
datasources/counter_snapshots.py) before anything is read or counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from datasources.channels import on_server

# Set once the counters are in Redis: seeded, restored from the snapshot, or found there.
PRESENT = "counters:present"
STATS_PREFIX, STATS_SUFFIX = "report:", ":stats"


class CountersLostError(RedisError):
    """Redis holds no counters: they must be restored from the snapshot first. A
    ``RedisError``, so that counters that cannot be restored are unavailable, like Redis."""


class Counter(StrEnum):
    VIEWS = "views"
    DOWNLOADS = "downloads"


@dataclass(frozen=True)
class ReportCounters:
    report_id: int
    views: int
    downloads: int


def stats_key(report_id: int) -> str:
    return f"{STATS_PREFIX}{report_id}{STATS_SUFFIX}"


def leaderboard_key(counter: Counter) -> str:
    return f"leaderboard:{counter.value}"


def counters_channel(report_id: int) -> str:
    """Published to when a report's counters change."""
    return f"live:counters:{report_id}"


# Published to when a leaderboard changes: one channel for both, since a board shows the
# other counter of its reports as well.
LEADERBOARDS_CHANNEL = "live:leaderboards"


# One increment, atomically with its leaderboard and its announcements; nothing if the
# counters are missing (they would start again from zero).
_RECORD = """
if redis.call('EXISTS', KEYS[3]) == 0 then return false end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('ZINCRBY', KEYS[2], 1, ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return redis.call('HMGET', KEYS[1], ARGV[5], ARGV[6])
"""


async def record(*, redis: Redis, report_id: int, counter: Counter) -> ReportCounters:
    """Count one view or download, with its leaderboard, and announce it."""
    values = await redis.eval(
        _RECORD,
        3,
        stats_key(report_id),
        leaderboard_key(counter),
        PRESENT,
        counter.value,
        str(report_id),
        on_server(redis, counters_channel(report_id)),
        on_server(redis, LEADERBOARDS_CHANNEL),
        Counter.VIEWS.value,
        Counter.DOWNLOADS.value,
    )
    if values is None:
        raise CountersLostError
    views, downloads = values
    return ReportCounters(report_id=report_id, views=int(views or 0), downloads=int(downloads or 0))


def _present(found: object) -> None:
    if not found:
        raise CountersLostError


async def set_report_counters(*, redis: Redis, counters: Sequence[ReportCounters]) -> None:
    """Overwrite counters and leaderboard scores in one pipelined round trip."""
    if not counters:
        return
    pipeline = redis.pipeline(transaction=False)
    for entry in counters:
        pipeline.hset(
            stats_key(entry.report_id),
            mapping={Counter.VIEWS.value: entry.views, Counter.DOWNLOADS.value: entry.downloads},
        )
    pipeline.zadd(
        leaderboard_key(Counter.VIEWS), {str(entry.report_id): entry.views for entry in counters}
    )
    pipeline.zadd(
        leaderboard_key(Counter.DOWNLOADS),
        {str(entry.report_id): entry.downloads for entry in counters},
    )
    pipeline.set(PRESENT, 1)
    await pipeline.execute()


async def counters_by_report(
    *, redis: Redis, report_ids: Sequence[int]
) -> list[ReportCounters | None]:
    """Every report's counters in one round trip; ``None`` where none exist.

    Read from the leaderboards, which every write changes with the hashes (in one
    transaction, or one pipeline): two commands for any number of reports, where the
    hashes take one per report. A report has counters when it is on either board.
    """
    if not report_ids:
        return []
    members = [str(report_id) for report_id in report_ids]
    pipeline = redis.pipeline(transaction=False)
    pipeline.zmscore(leaderboard_key(Counter.VIEWS), members)
    pipeline.zmscore(leaderboard_key(Counter.DOWNLOADS), members)
    pipeline.exists(PRESENT)
    views, downloads, present = await pipeline.execute()
    _present(present)
    return [
        None
        if viewed is None and downloaded is None
        else ReportCounters(
            report_id=report_id, views=int(viewed or 0), downloads=int(downloaded or 0)
        )
        for report_id, viewed, downloaded in zip(report_ids, views, downloads, strict=True)
    ]


async def top_report_ids(*, redis: Redis, counter: Counter, limit: int) -> list[int]:
    """The ids of the ``limit`` reports with the highest ``counter``, highest first."""
    pipeline = redis.pipeline(transaction=False)
    pipeline.zrevrange(leaderboard_key(counter), 0, limit - 1)
    pipeline.exists(PRESENT)
    members, present = await pipeline.execute()
    _present(present)
    return [int(member) for member in cast("list[bytes]", members)]


async def all_counters(*, redis: Redis) -> list[tuple[int, int, int]]:
    """(report id, views, downloads) for every counted report, from the leaderboards."""
    pipeline = redis.pipeline(transaction=False)
    pipeline.zrange(leaderboard_key(Counter.VIEWS), 0, -1, withscores=True)
    pipeline.zrange(leaderboard_key(Counter.DOWNLOADS), 0, -1, withscores=True)
    pipeline.exists(PRESENT)
    views, downloads, present = await pipeline.execute()
    _present(present)
    totals: dict[int, list[int]] = {}
    for index, board in enumerate((views, downloads)):
        for member, score in board:
            totals.setdefault(int(member), [0, 0])[index] = int(score)
    return [(report_id, pair[0], pair[1]) for report_id, pair in sorted(totals.items())]


async def take_turn(*, redis: Redis, name: str, seconds: float) -> bool:
    """Whether this process may do a periodic job now: one process per period, cluster-wide."""
    return bool(await redis.set(f"turn:{name}", "1", nx=True, px=max(1, int(seconds * 1000))))
