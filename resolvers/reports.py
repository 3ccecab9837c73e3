"""Reports: the type, its relations across the three stores, and the root fields."""

from __future__ import annotations

from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from core.context import Context
from core.errors import ErrorCode, GatewayError
from datasources import reports as report_data
from datasources.counters import Counter, top_report_ids
from datasources.documents import report_ids_tagged
from datasources.keyset import Page
from datasources.models import ReportStatus as StoredStatus
from datasources.reports import ReportFilter, ReportParent, ReportSort
from resolvers import authors, report_types, technologies
from resolvers.documents import ReportDocument
from resolvers.nodes import Node, database_ids, fields_of, from_global_id, to_global_id
from resolvers.pagination import (
    Connection,
    connection,
    page_request,
    parse_date,
    parse_int,
    parse_text,
)
from resolvers.stats import ReportCounter, ReportStats

if TYPE_CHECKING:
    from sqlalchemy import Row

    from resolvers.authors import Author, Authorship
    from resolvers.report_types import ReportType
    from resolvers.technologies import Technology

Info = strawberry.Info[Context, None]
MAX_TOP_REPORTS = 100
MAX_SEARCH_LENGTH = 200
MAX_FILTER_VALUES = 100


@strawberry.enum(description="Where a report stands in its life.")
class ReportStatus(Enum):
    DRAFT = StoredStatus.DRAFT.value
    REVIEW = StoredStatus.REVIEW.value
    PUBLISHED = StoredStatus.PUBLISHED.value
    ARCHIVED = StoredStatus.ARCHIVED.value


@strawberry.enum
class ReportOrderField(Enum):
    PUBLICATION_DATE = ReportSort.PUBLICATION_DATE.value
    TITLE = ReportSort.TITLE.value
    WORD_COUNT = ReportSort.WORD_COUNT.value
    VIEWS = strawberry.enum_value(
        ReportSort.VIEWS.value,
        description="Views as of the last counter snapshot (refreshed periodically).",
    )


@strawberry.enum
class OrderDirection(Enum):
    ASC = "asc"
    DESC = "desc"


@strawberry.input(description="How to order reports; ties are broken by id.")
class ReportOrder:
    field: ReportOrderField = ReportOrderField.PUBLICATION_DATE
    direction: OrderDirection = OrderDirection.DESC


PARSERS = {
    ReportOrderField.PUBLICATION_DATE: parse_date,
    ReportOrderField.TITLE: parse_text,
    ReportOrderField.WORD_COUNT: parse_int,
    ReportOrderField.VIEWS: parse_int,
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
        for argument in ("type_ids", "author_ids", "institution_ids", "technology_ids", "tags"):
            values = getattr(self, argument)
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


@strawberry.type(description="A research report.")
class Report(Node):
    database_id: int
    title: str
    abstract: str | None
    publication_date: date | None
    word_count: int
    status: ReportStatus
    created_at: datetime
    updated_at: datetime
    report_type_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: Row[Any]) -> Report:
        return cls(
            id=to_global_id("Report", row.id),
            database_id=row.id,
            status=ReportStatus(row.status),
            report_type_id=row.report_type_id,
            **fields_of(
                row, "title", "abstract", "publication_date", "word_count", "created_at",
                "updated_at",
            ),
        )  # fmt: skip

    @strawberry.field(name="type")
    async def report_type(
        self, info: Info
    ) -> Annotated["ReportType", strawberry.lazy("resolvers.report_types")]:
        row = await info.context.loaders.report_type.load(self.report_type_id)
        if row is None:  # the foreign key makes this impossible short of a concurrent delete
            raise GatewayError("the report's type no longer exists", ErrorCode.NOT_FOUND)
        return report_types.ReportType.from_row(row)

    @strawberry.field(description="The report's authors, primary author first.")
    async def authors(
        self, info: Info
    ) -> list[Annotated["Authorship", strawberry.lazy("resolvers.authors")]]:
        rows = await info.context.loaders.authorships.load(self.database_id)
        return [authors.Authorship.from_row(row) for row in rows]

    @strawberry.field
    async def primary_author(
        self, info: Info
    ) -> Annotated["Author", strawberry.lazy("resolvers.authors")] | None:
        rows = await info.context.loaders.authorships.load(self.database_id)
        primary = next((row for row in rows if row.is_primary_author), None)
        return None if primary is None else authors.Author.from_row(primary)

    @strawberry.field
    async def technologies(
        self, info: Info
    ) -> list[Annotated["Technology", strawberry.lazy("resolvers.technologies")]]:
        rows = await info.context.loaders.technologies_of_report.load(self.database_id)
        return [technologies.Technology.from_row(row) for row in rows]

    @strawberry.field(description="The report's document (MongoDB); null if it has none.")
    async def document(self, info: Info) -> ReportDocument | None:
        document = await info.context.loaders.document.load(self.database_id)
        return None if document is None else ReportDocument.from_document(document)

    @strawberry.field(description="Live counters (Redis); null while they cannot be read.")
    async def stats(self, info: Info) -> ReportStats | None:
        counters = await info.context.loaders.counters.load(self.database_id)
        if counters is None:
            return ReportStats(views=0, downloads=0)
        return ReportStats(views=counters.views, downloads=counters.downloads)


def _ordering_tag(order: ReportOrder) -> str:
    return f"reports:{order.field.value}:{order.direction.value}"


def _report_connection(page: Page, order: ReportOrder, counter: Any) -> Connection[Report]:
    return connection(page, ordering=_ordering_tag(order), node=Report.from_row, counter=counter)


async def reports_under(
    info: Info,
    parent: ReportParent,
    parent_id: int,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    order_by: ReportOrder | None,
) -> Connection[Report]:
    """A page of a parent's reports; the pages of all parents in a list share one query."""
    order = order_by or ReportOrder()
    request = page_request(
        first=first, after=after, last=last, before=before,
        ordering=_ordering_tag(order), parse=PARSERS[order.field],
    )  # fmt: skip
    loaders = info.context.loaders
    page = await loaders.report_pages(
        parent,
        ReportSort(order.field.value),
        descending=order.direction is OrderDirection.DESC,
        request=request,
    ).load(parent_id)
    return _report_connection(page, order, lambda: loaders.report_counts(parent).load(parent_id))


@strawberry.type
class ReportQuery:
    @strawberry.field(description="A report by its ID (or its database id); null if none.")
    async def report(self, info: Info, id: strawberry.ID) -> Report | None:
        database_id = int(id) if id.isdigit() else _report_id(id)
        row = await info.context.loaders.report.load(database_id)
        return None if row is None else Report.from_row(row)

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
        request = page_request(
            first=first, after=after, last=last, before=before,
            ordering=_ordering_tag(order), parse=PARSERS[order.field],
        )  # fmt: skip
        loaders = info.context.loaders
        connections = info.context.connections
        tagged_ids = None
        if criteria.tags:
            tagged_ids = await loaders.call(
                "mongodb", report_ids_tagged(database=connections.documents, tags=criteria.tags)
            )
        engine = connections.engine
        page = await loaders.call(
            "postgres",
            report_data.report_page(
                engine=engine,
                criteria=criteria,
                tagged_ids=tagged_ids,
                ordering=report_data.report_ordering(
                    ReportSort(order.field.value),
                    descending=order.direction is OrderDirection.DESC,
                ),
                request=request,
            ),
        )
        for row in page.rows:
            loaders.report.prime(row.id, row)

        async def total() -> int:
            return await loaders.call(
                "postgres",
                report_data.count_reports(engine=engine, criteria=criteria, tagged_ids=tagged_ids),
            )

        return _report_connection(page, order, total)

    @strawberry.field(description="The reports with the highest live counter, highest first.")
    async def top_reports(
        self, info: Info, by: ReportCounter = ReportCounter.VIEWS, limit: int = 10
    ) -> list[Report] | None:
        if not 1 <= limit <= MAX_TOP_REPORTS:
            raise GatewayError(
                f"limit must be between 1 and {MAX_TOP_REPORTS}, got {limit}",
                ErrorCode.BAD_USER_INPUT,
                argument="limit",
            )
        loaders = info.context.loaders
        ids = await loaders.call(
            "redis",
            top_report_ids(
                redis=info.context.connections.redis, counter=Counter(by.value), limit=limit
            ),
        )
        rows = await loaders.report.load_many(ids)
        # A report deleted since it was counted is skipped, not returned as null.
        return [Report.from_row(row) for row in rows if row is not None]


def _report_id(value: str) -> int:
    type_name, database_id = from_global_id(value)
    if type_name != "Report":
        raise GatewayError(
            f"expected a Report ID, got a {type_name} ID", ErrorCode.BAD_USER_INPUT, argument="id"
        )
    return database_id
