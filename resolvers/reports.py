"""The root fields that find and list reports: by id, filtered and ordered, and by live
counter."""

from __future__ import annotations

from datetime import date

import strawberry

from core import sources
from core.context import Context
from core.errors import ErrorCode, GatewayError
from core.loaders import Loaders
from datasources.counters import Counter
from datasources.reports import ReportFilter, ReportSort
from resolvers.catalogue import (
    OrderDirection,
    Report,
    ReportOrder,
    ReportStatus,
    report_connection,
    report_page_request,
)
from resolvers.nodes import database_id_of, database_ids, from_global_id
from resolvers.pagination import Connection, selects_total_count
from resolvers.stats import ReportCounter

Info = strawberry.Info[Context, None]
MAX_TOP_REPORTS = 100
MAX_SEARCH_LENGTH = 200
MAX_FILTER_VALUES = 100
# The filter's lists, by their names in the schema, which is what a client is told of.
FILTER_LISTS = {
    "typeIds": "type_ids",
    "authorIds": "author_ids",
    "institutionIds": "institution_ids",
    "technologyIds": "technology_ids",
    "tags": "tags",
}


@strawberry.input(description="Reports matching every criterion given.")
class ReportFilterInput:
    status: list[ReportStatus] | None = None
    type_ids: list[strawberry.ID] | None = None
    author_ids: list[strawberry.ID] | None = None
    institution_ids: list[strawberry.ID] | None = None
    technology_ids: list[strawberry.ID] | None = None
    published_from: date | None = None
    published_to: date | None = None
    tags: list[str] | None = strawberry.field(
        default=None, description="Reports whose document carries any of these tags."
    )
    search: str | None = strawberry.field(
        default=None,
        description='Full-text search over title and abstract ("phrases", -excluded, or).',
    )

    def criteria(self) -> ReportFilter:
        for argument, attribute in FILTER_LISTS.items():
            values = getattr(self, attribute)
            if values is not None and len(values) > MAX_FILTER_VALUES:
                raise GatewayError(
                    f"filter.{argument}: at most {MAX_FILTER_VALUES} values",
                    ErrorCode.BAD_USER_INPUT,
                    argument=argument,
                )
        if self.search is not None and len(self.search) > MAX_SEARCH_LENGTH:
            raise GatewayError(
                f"filter.search: at most {MAX_SEARCH_LENGTH} characters",
                ErrorCode.BAD_USER_INPUT,
                argument="search",
            )
        return ReportFilter(
            statuses=tuple(status.value for status in self.status or ()),
            type_ids=database_ids(self.type_ids, "ReportType", "typeIds"),
            author_ids=database_ids(self.author_ids, "Author", "authorIds"),
            institution_ids=database_ids(self.institution_ids, "Institution", "institutionIds"),
            technology_ids=database_ids(self.technology_ids, "Technology", "technologyIds"),
            published_from=self.published_from,
            published_to=self.published_to,
            search=self.search.strip() or None if self.search is not None else None,
            tags=tuple(self.tags or ()),
        )


@strawberry.type
class ReportQuery:
    @strawberry.field(description="A report by its ID (or its database id); null if none.")
    async def report(self, info: Info, id: strawberry.ID) -> Report | None:
        database_id = database_id_of(id) if id.isdecimal() else report_database_id(id)
        row = await info.context.loaders.load(sources.REPORT, database_id)
        return None if row is None else Report.from_record(row)

    @strawberry.field(description="Reports, filtered and ordered, a page at a time.")
    async def reports(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: ReportFilterInput | None = None,
        order_by: ReportOrder | None = None,
    ) -> Connection[Report]:
        order = order_by or ReportOrder()
        criteria = filter.criteria() if filter else ReportFilter()
        request = report_page_request(order, first=first, after=after, last=last, before=before)
        loaders = info.context.loaders
        tagged_ids = None
        if criteria.tags:
            tagged_ids = await loaders.read(sources.tagged_report_ids(criteria.tags))
        page = await loaders.read(
            sources.listed_reports(
                criteria,
                tagged_ids,
                ReportSort(order.field.value),
                descending=order.direction is OrderDirection.DESC,
                request=request,
                counted=selects_total_count(info),
            )
        )
        for record in page.records:
            loaders.prime(sources.REPORT, record.id, record)
        count = sources.counted_reports(criteria, tagged_ids)
        return report_connection(page, order, lambda: loaders.read(count))

    @strawberry.field(description="The reports with the highest live counter, highest first.")
    async def top_reports(
        self, info: Info, by: ReportCounter = ReportCounter.VIEWS, limit: int = 10
    ) -> list[Report] | None:
        ids = await info.context.loaders.read(leaderboard(by, limit))
        return await reports_of(info.context.loaders, ids)


def leaderboard(by: ReportCounter, limit: int) -> sources.Read[list[int]]:
    if not 1 <= limit <= MAX_TOP_REPORTS:
        raise GatewayError(
            f"limit must be between 1 and {MAX_TOP_REPORTS}, got {limit}",
            ErrorCode.BAD_USER_INPUT,
            argument="limit",
        )
    return sources.top_reports(Counter(by.value), limit)


async def reports_of(loaders: Loaders, ids: list[int]) -> list[Report]:
    rows = await loaders.load_many(sources.REPORT, ids)
    # A report deleted since it was counted is skipped, not returned as null.
    return [Report.from_record(row) for row in rows if row is not None]


def report_database_id(value: str) -> int:
    type_name, database_id = from_global_id(value)
    if type_name != "Report":
        raise GatewayError(
            f"expected a Report ID, got a {type_name} ID", ErrorCode.BAD_USER_INPUT, argument="id"
        )
    return database_id
