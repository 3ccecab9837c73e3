"""Live counters in Redis: one hash per report, and a sorted set per leaderboard that holds
the same numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

from redis.asyncio import Redis


class Counter(StrEnum):
    VIEWS = "views"
    DOWNLOADS = "downloads"


@dataclass(frozen=True)
class ReportCounters:
    report_id: int
    views: int
    downloads: int


def stats_key(report_id: int) -> str:
    return f"report:{report_id}:stats"


def leaderboard_key(counter: Counter) -> str:
    return f"leaderboard:{counter.value}"


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
    views, downloads = await pipeline.execute()
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
    members = cast("list[bytes]", await redis.zrevrange(leaderboard_key(counter), 0, limit - 1))
    return [int(member) for member in members]


async def all_counters(*, redis: Redis) -> list[tuple[int, int, int]]:
    """(report id, views, downloads) for every counted report, from the leaderboards."""
    pipeline = redis.pipeline(transaction=False)
    pipeline.zrange(leaderboard_key(Counter.VIEWS), 0, -1, withscores=True)
    pipeline.zrange(leaderboard_key(Counter.DOWNLOADS), 0, -1, withscores=True)
    views, downloads = await pipeline.execute()
    totals: dict[int, list[int]] = {}
    for index, board in enumerate((views, downloads)):
        for member, score in board:
            totals.setdefault(int(member), [0, 0])[index] = int(score)
    return [(report_id, pair[0], pair[1]) for report_id, pair in sorted(totals.items())]


async def take_turn(*, redis: Redis, name: str, seconds: float) -> bool:
    """Whether this process may do a periodic job now: one process per period, cluster-wide."""
    return bool(await redis.set(f"turn:{name}", "1", nx=True, px=max(1, int(seconds * 1000))))
