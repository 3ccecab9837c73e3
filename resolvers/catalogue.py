"""The catalogue's object types: reports, authors, institutions, technologies, report types.

They refer to each other (a report's authors, an author's reports), so they live in one
module: split across modules, building each other's objects would make the modules import
each other in a circle. Each relation is declared beside its field with ``relation``: the
source that fills it, the key, and how a fetched record becomes the object. The root
fields that list and find them live in the modules of their areas.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import Enum
from typing import Any, ClassVar

import strawberry

from core import sources
from core.auth import Access
from core.context import Context
from core.errors import ErrorCode, GatewayError
from core.sources import RecordFields
from datasources.counters import ReportCounters
from datasources.keyset import Page, PageRequest
from datasources.models import ReportStatus as StoredStatus
from datasources.records import (
    AuthorRecord,
    AuthorshipRecord,
    InstitutionRecord,
    ReportRecord,
    ReportTypeRecord,
    TechnologyRecord,
)
from datasources.reports import ReportParent, ReportSort
from resolvers.documents import ReportDocument
from resolvers.nodes import Node, to_global_id
from resolvers.pagination import (
    Connection,
    connection,
    page_request,
    parse_date,
    parse_int,
    parse_text,
)
from resolvers.relations import record_relation, relation
from resolvers.stats import ReportStats

Info = strawberry.Info[Context, None]
AUTHOR_ORDERING = "authors:name:asc"


@strawberry.enum(description="Where a report stands in its life.")
class ReportStatus(Enum):
    DRAFT = StoredStatus.DRAFT.value
    REVIEW = StoredStatus.REVIEW.value
    PUBLISHED = StoredStatus.PUBLISHED.value
    ARCHIVED = StoredStatus.ARCHIVED.value


# By stored value: a dict look-up, where calling the enum takes several Python calls.
REPORT_STATUSES = {status.value: status for status in ReportStatus}


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


def ordering_tag(order: ReportOrder) -> str:
    return f"reports:{order.field.value}:{order.direction.value}"


def report_page_request(
    order: ReportOrder,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> PageRequest:
    return page_request(
        first=first, after=after, last=last, before=before,
        ordering=ordering_tag(order), parse=PARSERS[order.field],
    )  # fmt: skip


def report_connection(page: Page, order: ReportOrder, counter: Any) -> Connection[Report]:
    return connection(page, ordering=ordering_tag(order), node=Report.from_record, counter=counter)


def report_list(parent: ReportParent, description: str) -> Any:
    """The paginated ``reports`` field of the types reports hang from (author, technology,
    report type): one definition, so that every such list pages, orders and batches alike;
    the pages of all parents in a list share one query."""

    async def resolve(
        root: Any,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        order_by: ReportOrder | None = None,
    ) -> Connection[Report]:
        order = order_by or ReportOrder()
        request = report_page_request(order, first=first, after=after, last=last, before=before)
        loaders = info.context.loaders
        source = sources.report_pages(
            parent,
            ReportSort(order.field.value),
            descending=order.direction is OrderDirection.DESC,
            request=request,
        )
        page = await loaders.load(source, root.database_id)
        counts = sources.report_counts(parent)
        return report_connection(page, order, lambda: loaders.load(counts, root.database_id))

    return strawberry.field(resolver=resolve, description=description)


def _primary_author(links: list[AuthorshipRecord]) -> AuthorRecord | None:
    return next((link.author for link in links if link.is_primary_author), None)


def report_stats(counters: ReportCounters | None) -> ReportStats:
    if counters is None:
        return ReportStats(views=0, downloads=0)
    return ReportStats(views=counters.views, downloads=counters.downloads)


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

    record_fields: ClassVar[RecordFields] = RecordFields(
        ReportRecord,
        {
            "id": lambda record: to_global_id("Report", record.id),
            "database_id": "id",
            "title": "title",
            "abstract": "abstract",
            "publication_date": "publication_date",
            "word_count": "word_count",
            # None where the operation does not read it (planner/reading.py): an object
            # made of a record is made whole, whatever its selection reads.
            "status": lambda record: REPORT_STATUSES.get(record.status),
            "created_at": "created_at",
            "updated_at": "updated_at",
            "report_type_id": "report_type_id",
            "report_type": "report_type",
        },
        # What the computed fields read.
        paths={"id": "id", "status": "status"},
    )

    @classmethod
    def from_record(cls, record: ReportRecord) -> Report:
        report = cls.record_fields.construct(cls, record)
        # The mapping reads the type's record, read with the report's (see
        # datasources/records.py), which the planner projects as it is; the object holds
        # the type's object.
        report.report_type = ReportType.from_record(record.report_type)
        return report

    report_type: ReportType = strawberry.field(name="type")
    authors: list[Authorship] = record_relation(
        sources.AUTHORSHIPS_OF_REPORT,
        key="database_id",
        node=lambda: Authorship,
        many=True,
        description="The report's authors, primary author first.",
    )
    primary_author: Author | None = record_relation(
        sources.AUTHORSHIPS_OF_REPORT, key="database_id", node=lambda: Author, pick=_primary_author
    )
    technologies: list[Technology] = record_relation(
        sources.TECHNOLOGIES_OF_REPORT, key="database_id", node=lambda: Technology, many=True
    )
    document: ReportDocument | None = record_relation(
        sources.DOCUMENT_OF_REPORT,
        key="database_id",
        node=lambda: ReportDocument,
        description="The report's document (MongoDB); null if it has none.",
        narrow=sources.document_of_report,
    )
    stats: ReportStats | None = relation(
        sources.COUNTERS_OF_REPORT,
        key="database_id",
        build=report_stats,
        description="Live counters (Redis); null while they cannot be read.",
    )


def _email(root: Author, info: Info) -> str | None:
    if not info.context.viewer.can(Access.READER):
        raise GatewayError(
            "Author.email is for readers and above: authenticate with a reader key or token",
            ErrorCode.FORBIDDEN,
        )
    return root.email_address


@strawberry.type(description="A person who writes reports.")
class Author(Node):
    database_id: int
    name: str = strawberry.field(description="The full name: the first name, then the last.")
    first_name: str = strawberry.field(description="The given name; empty for a single name.")
    last_name: str = strawberry.field(description="The family name, or the single name.")
    orcid: str | None
    institution_id: strawberry.Private[int | None]
    email_address: strawberry.Private[str]

    record_fields: ClassVar[RecordFields] = RecordFields(
        AuthorRecord,
        {
            "id": lambda record: to_global_id("Author", record.id),
            "database_id": "id",
            "name": "name",
            "first_name": "first_name",
            "last_name": "last_name",
            "orcid": "orcid",
            "institution_id": "institution_id",
            "email_address": "email",
        },
        paths={"id": "id"},
    )

    @classmethod
    def from_record(cls, record: AuthorRecord) -> Author:
        return cls.record_fields.construct(cls, record)

    email: str | None = strawberry.field(
        resolver=_email,
        description="For readers and above; null with FORBIDDEN otherwise.",
    )
    institution: Institution | None = record_relation(
        sources.INSTITUTION, key="institution_id", node=lambda: Institution
    )
    reports: Connection[Report] = report_list(
        ReportParent.AUTHOR, "The reports this author wrote or co-wrote."
    )


@strawberry.type(description="An author's part in one report.")
class Authorship:
    author: Author
    is_primary: bool
    position: int

    record_fields: ClassVar[RecordFields] = RecordFields(
        AuthorshipRecord,
        {"author": "author", "is_primary": "is_primary_author", "position": "position"},
    )

    @classmethod
    def from_record(cls, record: AuthorshipRecord) -> Authorship:
        authorship = cls.record_fields.construct(cls, record)
        # The mapping reads the author's record, which the planner projects as it is; the
        # object holds the author's object.
        authorship.author = Author.from_record(record.author)
        return authorship


def author_page_request(
    first: int | None, after: str | None, last: int | None, before: str | None
) -> PageRequest:
    return page_request(
        first=first, after=after, last=last, before=before, ordering=AUTHOR_ORDERING,
        parse=parse_text,
    )  # fmt: skip


def author_connection(page: Page, counter: Any) -> Connection[Author]:
    return connection(page, ordering=AUTHOR_ORDERING, node=Author.from_record, counter=counter)


@strawberry.type(description="A university, laboratory or company that authors belong to.")
class Institution(Node):
    database_id: int
    name: str
    location: str | None = strawberry.field(description="Where the institution is.")
    country: str | None = strawberry.field(deprecation_reason="Use location.")
    website: str | None

    record_fields: ClassVar[RecordFields] = RecordFields(
        InstitutionRecord,
        {
            "id": lambda record: to_global_id("Institution", record.id),
            "database_id": "id",
            "name": "name",
            "location": "location",
            "country": "location",
            "website": "website",
        },
        paths={"id": "id"},
    )

    @classmethod
    def from_record(cls, record: InstitutionRecord) -> Institution:
        return cls.record_fields.construct(cls, record)

    @strawberry.field(description="The institution's authors, by name.")
    async def authors(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Author]:
        request = author_page_request(first, after, last, before)
        loaders = info.context.loaders
        page = await loaders.load(sources.author_pages_of_institution(request), self.database_id)
        return author_connection(
            page,
            lambda: loaders.load(sources.AUTHOR_COUNTS_OF_INSTITUTION, self.database_id),
        )


@strawberry.type(description="A technology, in one version.")
class Technology(Node):
    database_id: int
    name: str
    version: str
    description: str | None
    technology_type: str

    record_fields: ClassVar[RecordFields] = RecordFields(
        TechnologyRecord,
        {
            "id": lambda record: to_global_id("Technology", record.id),
            "database_id": "id",
            "name": "name",
            "version": "version",
            "description": "description",
            "technology_type": "technology_type",
        },
        paths={"id": "id"},
    )

    @classmethod
    def from_record(cls, record: TechnologyRecord) -> Technology:
        return cls.record_fields.construct(cls, record)

    reports: Connection[Report] = report_list(
        ReportParent.TECHNOLOGY, "The reports that use this technology."
    )


@strawberry.type(description="A kind of report.")
class ReportType(Node):
    database_id: int
    name: str
    description: str | None

    record_fields: ClassVar[RecordFields] = RecordFields(
        ReportTypeRecord,
        {
            "id": lambda record: to_global_id("ReportType", record.id),
            "database_id": "id",
            "name": "name",
            "description": "description",
        },
        paths={"id": "id"},
    )

    @classmethod
    def from_record(cls, record: ReportTypeRecord) -> ReportType:
        return cls.record_fields.construct(cls, record)

    reports: Connection[Report] = report_list(ReportParent.REPORT_TYPE, "The reports of this kind.")
