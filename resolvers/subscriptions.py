"""Live subscriptions: a report's counters, the leaderboard, and a report's changes.

Each listens to its channel through the process's pub/sub hub (core/pubsub.py) and, after
every change, reads the state again with fresh loaders: a subscriber that fell behind
skips to the latest state, and after Redis comes back (when messages may have been
missed) every subscription reads again. The transports run one of these per distinct
operation, variables and scope, whatever the number of subscribers (see gateway/live.py).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from core import sources
from core.context import Context
from core.errors import ErrorCode, GatewayError
from core.loaders import Loaders
from core.pubsub import Hub
from datasources.counters import LEADERBOARDS_CHANNEL, counters_channel
from datasources.report_writes import report_channel
from resolvers.catalogue import Report, report_stats
from resolvers.reports import leaderboard, report_database_id, reports_of
from resolvers.stats import ReportCounter, ReportStats

Info = strawberry.Info[Context, None]
# Subscriptions whose every event is the whole current state: a subscriber who joins a
# running one is sent its latest event at once. The others send changes only.
CURRENT_STATE = frozenset({"reportStats", "topReports"})
# Seconds between reads while a store fails them: a change announced meanwhile may have
# been lost with it.
RETRY_AFTER = 1.0


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="The report's live counters: the current value at once, then every change."
    )
    async def report_stats(
        self, info: Info, report_id: strawberry.ID
    ) -> AsyncGenerator[ReportStats, None]:
        database_id = report_database_id(report_id)
        async with _hub(info).watching(counters_channel(database_id)) as changes:
            await _existing(_fresh(info), database_id)
            sent: ReportStats | None = None
            while True:
                loaders = _fresh(info)
                try:
                    counters = await loaders.load(sources.COUNTERS_OF_REPORT, database_id)
                    if counters is None and await loaders.load(sources.REPORT, database_id) is None:
                        return  # deleted: the subscription is complete
                except GatewayError:
                    # A store is unavailable: read again at the next change, or soon.
                    await changes.next(within=RETRY_AFTER)
                    continue
                stats = report_stats(counters)
                if stats != sent:
                    sent = stats
                    yield stats
                await changes.next()

    @strawberry.subscription(
        description="The leaderboard: the current one at once, then whenever its order or "
        "values change."
    )
    async def top_reports(
        self, info: Info, by: ReportCounter = ReportCounter.VIEWS, limit: int = 10
    ) -> AsyncGenerator[list[Report], None]:
        board = leaderboard(by, limit)
        async with _hub(info).watching(LEADERBOARDS_CHANNEL) as changes:
            sent: list[tuple[int, int, int]] | None = None
            while True:
                loaders = _fresh(info)
                try:
                    ids = await loaders.read(board)
                    counters = await loaders.load_many(sources.COUNTERS_OF_REPORT, ids)
                    standings = [
                        (report_id, stats.views, stats.downloads)
                        for report_id, stats in zip(ids, map(report_stats, counters), strict=True)
                    ]
                    reports = None if standings == sent else await reports_of(loaders, ids)
                except GatewayError:
                    # A store is unavailable: read again at the next change, or soon.
                    await changes.next(within=RETRY_AFTER)
                    continue
                if reports is not None:
                    sent = standings
                    yield reports
                await changes.next()

    @strawberry.subscription(
        description="The report after each mutation that changes it; ends when the report is "
        "deleted. After the gateway lost Redis for a while, the report is sent again, in case "
        "a change was missed."
    )
    async def report_updated(
        self, info: Info, report_id: strawberry.ID
    ) -> AsyncGenerator[Report, None]:
        database_id = report_database_id(report_id)
        async with _hub(info).watching(report_channel(database_id)) as changes:
            changes.forget_connecting()
            await _existing(_fresh(info), database_id)
            within = None
            while True:
                await changes.next(within)
                try:
                    row = await _fresh(info).load(sources.REPORT, database_id)
                except GatewayError:
                    # A store is unavailable: read again at the next change, or soon.
                    within = RETRY_AFTER
                    continue
                within = None
                if row is None:
                    return  # deleted: the subscription is complete
                yield Report.from_record(row)


def _hub(info: Info) -> Hub:
    hub = info.context.hub
    if hub is None:
        raise GatewayError("subscriptions are not available here", ErrorCode.SERVICE_UNAVAILABLE)
    return hub


def _fresh(info: Info) -> Loaders:
    """Loaders for one event: each reads the stores again, under its own deadline."""
    return info.context.begin_operation().loaders


async def _existing(loaders: Loaders, database_id: int) -> None:
    if await loaders.load(sources.REPORT, database_id) is None:
        raise GatewayError("no such report", ErrorCode.NOT_FOUND)
