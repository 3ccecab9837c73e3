"""Writes: reports across PostgreSQL and MongoDB, and the live counters in Redis.

Expected failures are part of the schema: each mutation returns a union of its result and
typed errors (validation with field messages, not found, conflict, forbidden). A store
that fails is unexpected and raises SERVICE_UNAVAILABLE, leaving nothing half-written.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import strawberry
from sqlalchemy.exc import IntegrityError
from strawberry.scalars import JSON

from core import sources
from core.auth import Access
from core.context import Context
from core.stores import Store
from datasources import report_writes
from datasources.counter_snapshots import restored
from datasources.counters import Counter, record
from datasources.models import Author, ReportType, Technology
from datasources.models import ReportStatus as StoredStatus
from datasources.report_writes import Authorship, DocumentContent, Parents, report_channel
from resolvers.catalogue import Report, ReportStatus
from resolvers.nodes import to_global_id
from resolvers.stats import ReportStats
from resolvers.validation import Problems, check_document_size, check_metadata, given_fields

Info = strawberry.Info[Context, None]
NEXT_STATUS = {
    StoredStatus.DRAFT.value: StoredStatus.REVIEW.value,
    StoredStatus.REVIEW.value: StoredStatus.PUBLISHED.value,
    StoredStatus.PUBLISHED.value: StoredStatus.ARCHIVED.value,
}


@strawberry.type
class FieldError:
    field: str
    message: str


@strawberry.type(description="The input was refused; `fields` says where and why.")
class ValidationFailed:
    message: str
    fields: list[FieldError]


@strawberry.type
class NotFound:
    message: str
    id: strawberry.ID


@strawberry.type(description="The write collides with the current state; re-read and retry.")
class Conflict:
    message: str


@strawberry.type
class Forbidden:
    message: str
    required_role: str


@strawberry.type
class ReportSaved:
    report: Report


@strawberry.type
class ReportDeleted:
    deleted_id: strawberry.ID


@strawberry.type
class Counted:
    report_id: strawberry.ID
    stats: ReportStats


ReportPayload = Annotated[
    ReportSaved | ValidationFailed | NotFound | Conflict | Forbidden,
    strawberry.union("ReportPayload"),
]
DeletePayload = Annotated[
    ReportDeleted | NotFound | Forbidden, strawberry.union("DeleteReportPayload")
]
CountPayload = Annotated[Counted | NotFound, strawberry.union("CountPayload")]


@strawberry.input
class AuthorshipInput:
    author_id: strawberry.ID
    is_primary: bool = False


@strawberry.input
class SectionInput:
    heading: str
    body: str


@strawberry.input
class ReferenceInput:
    title: str
    url: str | None = None
    doi: str | None = None


@strawberry.input(description="Document fields; the ones given replace the stored ones.")
class DocumentInput:
    sections: list[SectionInput] | None = None
    tags: list[str] | None = None
    references: list[ReferenceInput] | None = None
    metadata: JSON | None = None

    def changes(self, problems: Problems, path: str) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        problems.count(f"{path}.sections", self.sections, 200)
        problems.count(f"{path}.tags", self.tags, 50)
        problems.count(f"{path}.references", self.references, 500)
        if self.sections is not None:
            for index, section in enumerate(self.sections):
                problems.length(f"{path}.sections[{index}].heading", section.heading, 1, 500)
                problems.length(f"{path}.sections[{index}].body", section.body, 0, 100_000)
            changes["sections"] = [{"heading": s.heading, "body": s.body} for s in self.sections]
        if self.tags is not None:
            for index, tag in enumerate(self.tags):
                problems.length(f"{path}.tags[{index}]", tag, 1, 50)
            changes["tags"] = list(dict.fromkeys(self.tags))
        if self.references is not None:
            for index, reference in enumerate(self.references):
                problems.length(f"{path}.references[{index}].title", reference.title, 1, 1000)
                problems.length(f"{path}.references[{index}].url", reference.url, 1, 2000)
                problems.length(f"{path}.references[{index}].doi", reference.doi, 1, 200)
            changes["references"] = [
                {"title": r.title, "url": r.url, "doi": r.doi} for r in self.references
            ]
        if self.metadata is not None:
            if not isinstance(self.metadata, dict):
                problems.add(f"{path}.metadata", "must be an object")
            else:
                check_metadata(problems, f"{path}.metadata", self.metadata)
                changes["metadata"] = self.metadata
        check_document_size(problems, path, changes)
        return changes


@strawberry.input
class CreateReportInput:
    title: str
    type_id: strawberry.ID
    authors: list[AuthorshipInput]
    abstract: str | None = None
    publication_date: date | None = None
    word_count: int = 0
    technology_ids: list[strawberry.ID] = strawberry.field(default_factory=list)
    document: DocumentInput | None = None


@strawberry.input(description="Only the fields given change; a null clears a nullable field.")
class UpdateReportInput:
    title: str | None = strawberry.UNSET
    type_id: strawberry.ID | None = strawberry.UNSET
    authors: list[AuthorshipInput] | None = strawberry.UNSET
    abstract: str | None = strawberry.UNSET
    publication_date: date | None = strawberry.UNSET
    word_count: int | None = strawberry.UNSET
    technology_ids: list[strawberry.ID] | None = strawberry.UNSET


def forbidden(info: Info, needed: Access) -> Forbidden | None:
    if info.context.viewer.can(needed):
        return None
    return Forbidden(
        message=f"this needs the {needed.name.lower()} role or above",
        required_role=needed.name.lower(),
    )


def failed(problems: Problems) -> ValidationFailed:
    return ValidationFailed(
        message="the input was refused",
        fields=[FieldError(field=path, message=message) for path, message in problems.found],
    )


def _check_columns(problems: Problems, values: dict[str, Any]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    if "title" in values:
        title = (values["title"] or "").strip()
        problems.length("title", title, 1, 500)
        columns["title"] = title
    if "abstract" in values:
        problems.length("abstract", values["abstract"], 0, 20_000)
        columns["abstract"] = values["abstract"]
    if "publication_date" in values:
        published = values["publication_date"]
        if published is not None and not 1900 <= published.year <= 2100:
            problems.add("publicationDate", "must be between 1900 and 2100")
        columns["publication_date"] = published
    if "word_count" in values:
        if values["word_count"] is None or not 0 <= values["word_count"] <= 10_000_000:
            problems.add("wordCount", "must be between 0 and 10,000,000")
        columns["word_count"] = values["word_count"]
    return columns


async def _existing(info: Info, table: Any, ids: list[int]) -> set[int]:
    return await info.context.loaders.call(
        Store.POSTGRES,
        report_writes.existing_ids(engine=info.context.connections.reader, table=table, ids=ids),
    )


async def _check_authors(
    info: Info, problems: Problems, given: list[AuthorshipInput]
) -> list[Authorship]:
    if not 1 <= len(given) <= 20:
        problems.add("authors", "a report has 1 to 20 authors")
    if sum(1 for entry in given if entry.is_primary) != 1:
        problems.add("authors", "exactly one author must be primary")
    author_ids = problems.database_ids("authors", [entry.author_id for entry in given], "Author")
    if len(set(author_ids)) != len(author_ids):
        problems.add("authors", "an author is listed twice")
    found = await _existing(info, Author.__table__, author_ids)
    for author_id in author_ids:
        if author_id not in found:
            problems.add("authors", f"no author {to_global_id('Author', author_id)}")
    pairs = sorted(zip(given, author_ids, strict=False), key=lambda pair: not pair[0].is_primary)
    return [Authorship(author_id, entry.is_primary) for entry, author_id in pairs]


async def _check_fields(
    info: Info, problems: Problems, values: dict[str, Any], *, creating: bool
) -> tuple[dict[str, Any], list[Authorship] | None, list[int] | None]:
    """Validate report fields and links; return columns, authorships and technology ids."""
    columns = _check_columns(problems, values)
    # Given as null in an update: these cannot be cleared, only replaced.
    for name, path, message in (
        ("type_id", "typeId", "a report always has a type"),
        ("authors", "authors", "a report has 1 to 20 authors"),
        ("technology_ids", "technologyIds", "give [] to remove every technology"),
    ):
        if name in values and values[name] is None:
            problems.add(path, f"may not be null: {message}")
    if values.get("type_id") is not None:
        type_ids = problems.database_ids("typeId", [values["type_id"]], "ReportType")
        if type_ids and not await _existing(info, ReportType.__table__, type_ids):
            problems.add("typeId", "no such report type")
        columns["report_type_id"] = type_ids[0] if type_ids else None
    authors = None
    if values.get("authors") is not None:
        authors = await _check_authors(info, problems, values["authors"])
    elif creating:
        problems.add("authors", "a report has 1 to 20 authors")
    technology_ids = None
    if values.get("technology_ids") is not None:
        given = problems.database_ids("technologyIds", values["technology_ids"], "Technology")
        technology_ids = list(dict.fromkeys(given))
        problems.count("technologyIds", technology_ids, 50)
        if len(await _existing(info, Technology.__table__, technology_ids)) != len(technology_ids):
            problems.add("technologyIds", "some technologies do not exist")
    return columns, authors, technology_ids


async def _forget(info: Info, report_id: int, parents: Parents) -> None:
    """After a write, this request's loaders and every cached response must read the new
    state: the report's, and that of every list it may have entered, left or moved in
    (those of all reports, and those under its ``parents``, before and after the write)."""
    await info.context.invalidate(
        sources.entity_tag("Report", report_id),
        sources.list_tag("Report"),
        *(sources.report_list_tag(parent, parent_id) for parent, parent_id in parents),
    )
    await info.context.announce(report_channel(report_id))
    loaders = info.context.loaders
    for source in (
        sources.REPORT, sources.AUTHORSHIPS_OF_REPORT, sources.TECHNOLOGIES_OF_REPORT,
        sources.DOCUMENT_OF_REPORT, sources.COUNTERS_OF_REPORT,
    ):  # fmt: skip
        loaders.clear(source, report_id)


async def _saved(
    info: Info, report_id: int, parents: Parents = frozenset()
) -> ReportSaved | NotFound:
    await _forget(info, report_id, parents)
    row = await info.context.loaders.load(sources.REPORT, report_id)
    if row is None:
        return NotFound(
            message="the report was deleted meanwhile", id=to_global_id("Report", report_id)
        )
    return ReportSaved(report=Report.from_record(row))


@strawberry.type
class ReportMutation:
    @strawberry.mutation(
        description="Create a report, its links and its document, in both stores or neither."
    )
    async def create_report(
        self, info: Info, input: CreateReportInput, idempotency_key: str | None = None
    ) -> ReportPayload:
        if denied := forbidden(info, Access.EDITOR):
            return denied
        problems = Problems()
        problems.length("idempotencyKey", idempotency_key, 1, 200)
        engine = info.context.connections.engine
        loaders = info.context.loaders
        if idempotency_key and not problems:
            earlier = await loaders.call(
                Store.POSTGRES,
                report_writes.idempotent_result(
                    engine=info.context.connections.reader, key=idempotency_key
                ),
            )
            if earlier is not None:
                return await _saved(info, earlier[1])
        values = {name: getattr(input, name) for name in (
            "title", "type_id", "authors", "abstract", "publication_date", "word_count",
            "technology_ids",
        )}  # fmt: skip
        columns, authors, technology_ids = await _check_fields(
            info, problems, values, creating=True
        )
        changes = input.document.changes(problems, "document") if input.document else {}
        if problems:
            return failed(problems)
        # A second attempt where a write with the same key collided with this one before
        # it committed (MySQL rolls one of two colliding writes back at once; PostgreSQL
        # makes the second wait for the first, then refuses it): the retry then waits too.
        attempts = 2 if idempotency_key else 1
        for attempt in range(attempts):
            try:
                report_id = await loaders.call(
                    Store.POSTGRES,
                    report_writes.create_report(
                        engine=engine,
                        documents=info.context.connections.documents,
                        fields=columns,
                        authors=authors or [],
                        technology_ids=technology_ids or [],
                        content=DocumentContent(**changes),
                        idempotency_key=idempotency_key,
                    ),
                    also=(Store.MONGODB,),
                )
                break
            except IntegrityError:
                # A concurrent write with the same key committed first: its result.
                if idempotency_key:
                    earlier = await report_writes.idempotent_result(
                        engine=info.context.connections.reader, key=idempotency_key
                    )
                    if earlier is not None:
                        return await _saved(info, earlier[1])
                if attempt == attempts - 1:
                    return Conflict(message="the report collides with another write; retry")
        return await _saved(
            info,
            report_id,
            report_writes.parents_given(columns.get("report_type_id"), authors, technology_ids),
        )

    @strawberry.mutation(description="Change some of a report's fields and links.")
    async def update_report(
        self, info: Info, id: strawberry.ID, input: UpdateReportInput
    ) -> ReportPayload:
        if denied := forbidden(info, Access.EDITOR):
            return denied
        problems = Problems()
        report_id = problems.database_id("id", id, "Report")
        values = given_fields(input)
        columns, authors, technology_ids = await _check_fields(
            info, problems, values, creating=False
        )
        if problems or report_id is None:
            return failed(problems)
        parents = await info.context.loaders.call(
            Store.POSTGRES,
            report_writes.update_report(
                engine=info.context.connections.engine, report_id=report_id,
                fields=columns, authors=authors, technology_ids=technology_ids,
            ),
        )  # fmt: skip
        if parents is None:
            return NotFound(message="no such report", id=id)
        return await _saved(info, report_id, parents)

    @strawberry.mutation(description="Move a report one step: Draft, Review, Published, Archived.")
    async def publish_report(
        self, info: Info, id: strawberry.ID, to: ReportStatus
    ) -> ReportPayload:
        if denied := forbidden(info, Access.EDITOR):
            return denied
        problems = Problems()
        report_id = problems.database_id("id", id, "Report")
        if report_id is None:
            return failed(problems)
        row = await info.context.loaders.load(sources.REPORT, report_id)
        if row is None:
            return NotFound(message="no such report", id=id)
        if NEXT_STATUS.get(row.status) != to.value:
            problems.add(
                "to",
                f"a {row.status} report can only move to {NEXT_STATUS.get(row.status, 'nothing')}",
            )
            return failed(problems)
        publish_on = (
            date.today() if to is ReportStatus.PUBLISHED and row.publication_date is None else None
        )
        parents = await info.context.loaders.call(
            Store.POSTGRES,
            report_writes.move_status(
                engine=info.context.connections.engine, report_id=report_id,
                current=row.status, target=to.value, publish_on=publish_on,
            ),
        )  # fmt: skip
        if parents is None:
            return Conflict(message="the report's status changed meanwhile; re-read and retry")
        return await _saved(info, report_id, parents)

    @strawberry.mutation(description="Delete a report, its document and its counters.")
    async def delete_report(self, info: Info, id: strawberry.ID) -> DeletePayload:
        if denied := forbidden(info, Access.ADMIN):
            return denied
        problems = Problems()
        report_id = problems.database_id("id", id, "Report")
        connections = info.context.connections
        if report_id is None:
            return NotFound(message="no such report", id=id)
        parents = await info.context.loaders.call(
            Store.POSTGRES,
            report_writes.delete_report(
                engine=connections.engine, documents=connections.documents,
                redis=connections.redis, report_id=report_id,
            ),
            also=(Store.MONGODB, Store.REDIS),
        )  # fmt: skip
        if parents is None:
            return NotFound(message="no such report", id=id)
        await _forget(info, report_id, parents)
        return ReportDeleted(deleted_id=id)

    @strawberry.mutation(
        description="Replace some of a report document's fields, if it is at expectedRevision."
    )
    async def upsert_report_document(
        self,
        info: Info,
        report_id: strawberry.ID,
        document: DocumentInput,
        expected_revision: int | None = None,
    ) -> ReportPayload:
        if denied := forbidden(info, Access.EDITOR):
            return denied
        problems = Problems()
        database_id = problems.database_id("reportId", report_id, "Report")
        changes = document.changes(problems, "document")
        if problems or database_id is None:
            return failed(problems)
        if await info.context.loaders.load(sources.REPORT, database_id) is None:
            return NotFound(message="no such report", id=report_id)
        revision = await info.context.loaders.call(
            Store.MONGODB,
            report_writes.update_document(
                documents=info.context.connections.documents, report_id=database_id,
                expected_revision=expected_revision, changes=changes,
            ),
        )  # fmt: skip
        if revision is None:
            return Conflict(message="the document changed since expectedRevision; re-read it")
        return await _saved(info, database_id)

    @strawberry.mutation(description="Count one view of a report.")
    async def record_view(self, info: Info, report_id: strawberry.ID) -> CountPayload:
        return await _count(info, report_id, Counter.VIEWS)

    @strawberry.mutation(description="Count one download of a report.")
    async def record_download(self, info: Info, report_id: strawberry.ID) -> CountPayload:
        return await _count(info, report_id, Counter.DOWNLOADS)


async def _count(info: Info, report_id: strawberry.ID, counter: Counter) -> Counted | NotFound:
    problems = Problems()
    database_id = problems.database_id("reportId", report_id, "Report")
    if database_id is None or await info.context.loaders.load(sources.REPORT, database_id) is None:
        return NotFound(message="no such report", id=report_id)
    stores = info.context.connections
    counters = await info.context.loaders.call(
        Store.REDIS,
        restored(
            redis=stores.redis,
            engine=stores.engine,
            read=lambda: record(redis=stores.redis, report_id=database_id, counter=counter),
        ),
    )
    await info.context.invalidate(
        sources.entity_tag(sources.COUNTERS, database_id), sources.LEADERBOARDS_TAG
    )
    info.context.loaders.clear(sources.COUNTERS_OF_REPORT, database_id)
    return Counted(
        report_id=report_id, stats=ReportStats(views=counters.views, downloads=counters.downloads)
    )
