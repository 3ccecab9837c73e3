"""Live counters in Redis: one hash per report, and a sorted set per leaderboard."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

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
