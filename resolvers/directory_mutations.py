"""Writes to authors, institutions and technologies (PostgreSQL only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from sqlalchemy.exc import IntegrityError

from core import sources
from core.auth import Access
from core.context import Context
from core.errors import ErrorCode, GatewayError
from core.sources import Source
from core.stores import Store
from datasources import catalogue
from datasources.models import Author as AuthorModel
from datasources.models import Institution as InstitutionModel
from datasources.models import Technology as TechnologyModel
from datasources.names import split_full_name
from datasources.reports import ReportParent
from resolvers.catalogue import Author, Institution, Technology
from resolvers.mutations import Conflict, Forbidden, NotFound, ValidationFailed, failed, forbidden
from resolvers.validation import EMAIL, ORCID, WEB_ADDRESS, Problems, given_fields

if TYPE_CHECKING:
    pass

Info = strawberry.Info[Context, None]


@strawberry.type
class AuthorSaved:
    author: Author


@strawberry.type
class AuthorDeleted:
    deleted_id: strawberry.ID


@strawberry.type
class InstitutionSaved:
    institution: Institution


@strawberry.type
class TechnologySaved:
    technology: Technology


AuthorPayload = Annotated[
    AuthorSaved | ValidationFailed | NotFound | Conflict | Forbidden,
    strawberry.union("AuthorPayload"),
]
DeleteAuthorPayload = Annotated[
    AuthorDeleted | NotFound | Conflict | Forbidden, strawberry.union("DeleteAuthorPayload")
]
InstitutionPayload = Annotated[
    InstitutionSaved | ValidationFailed | NotFound | Conflict | Forbidden,
    strawberry.union("InstitutionPayload"),
]
TechnologyPayload = Annotated[
    TechnologySaved | ValidationFailed | Conflict | Forbidden,
    strawberry.union("TechnologyPayload"),
]


@strawberry.input
class AuthorInput:
    first_name: str | None = strawberry.field(
        default=strawberry.UNSET, description="The given name; empty or absent for a single name."
    )
    last_name: str | None = strawberry.field(
        default=strawberry.UNSET, description="The family name, or the single name."
    )
    name: str | None = strawberry.field(
        default=strawberry.UNSET,
        deprecation_reason="Use firstName and lastName; a full name is split at its first space.",
    )
    email: str | None = strawberry.UNSET
    orcid: str | None = strawberry.UNSET
    institution_id: strawberry.ID | None = strawberry.UNSET


@strawberry.input
class InstitutionInput:
    name: str | None = strawberry.UNSET
    location: str | None = strawberry.UNSET
    country: str | None = strawberry.field(
        default=strawberry.UNSET, deprecation_reason="Use location."
    )
    website: str | None = strawberry.UNSET


@strawberry.input
class TechnologyInput:
    name: str
    version: str
    technology_type: str
    description: str | None = None


def _author_values(problems: Problems, given: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    values = _name_values(problems, given, creating=creating)
    if (creating and "email" not in given) or ("email" in given and given["email"] is None):
        problems.add("email", "is required")
    if given.get("email") is not None:
        values["email"] = given["email"].strip().lower()
        problems.length("email", values["email"], 3, 320)
        problems.pattern("email", values["email"], EMAIL, "an email address")
    if "orcid" in given:
        problems.pattern("orcid", given["orcid"], ORCID, "an ORCID iD (0000-0000-0000-000X)")
        values["orcid"] = given["orcid"]
    if "institution_id" in given:
        values["institution_id"] = (
            None
            if given["institution_id"] is None
            else problems.database_id("institutionId", given["institution_id"], "Institution")
        )
    return values


def _name_values(problems: Problems, given: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The first and last names, given as such or as a full name (deprecated); the full
    name stored is the database's, made of them."""
    parts: dict[str, Any] = {key: given[key] for key in ("first_name", "last_name") if key in given}
    if "name" in given and parts:
        problems.add("name", "give either name, or firstName and lastName")
        return {}
    if "name" in given:
        if given["name"] is None or not given["name"].strip():
            problems.add("name", "is required")
            return {}
        problems.length("name", given["name"].strip(), 1, 200)
        parts = dict(zip(("first_name", "last_name"), split_full_name(given["name"]), strict=True))
    elif creating and "last_name" not in parts:
        problems.add("lastName", "is required")
    if "last_name" in parts:
        if parts["last_name"] is None:
            problems.add("lastName", "is required")
            return {}
        parts["last_name"] = parts["last_name"].strip()
        problems.length("lastName", parts["last_name"], 1, 200)
    if "first_name" in parts:
        parts["first_name"] = (parts["first_name"] or "").strip()
        problems.length("firstName", parts["first_name"], 0, 200)
    elif creating:
        parts["first_name"] = ""  # a single name
    return parts


def _institution_values(
    problems: Problems, given: dict[str, Any], *, creating: bool
) -> dict[str, Any]:
    if (creating and "name" not in given) or ("name" in given and given["name"] is None):
        problems.add("name", "is required")
    if "location" in given and "country" in given:
        problems.add("country", "give either location or country")
    values = {key: value for key, value in given.items() if key != "country"}
    if "country" in given:
        values["location"] = given["country"]
    problems.length("location", values.get("location"), 1, 200)
    if given.get("name") is not None:
        values["name"] = given["name"].strip()
        problems.length("name", values["name"], 1, 300)
    problems.length("website", given.get("website"), 1, 500)
    problems.pattern("website", given.get("website"), WEB_ADDRESS, "an http(s) address")
    return values


def _technology_values(
    problems: Problems, given: dict[str, Any], *, creating: bool
) -> dict[str, Any]:
    values = {name: given[name].strip() for name in ("name", "version", "technology_type")} | {
        "description": given.get("description")
    }
    problems.length("name", values["name"], 1, 200)
    problems.length("version", values["version"], 1, 50)
    problems.length("technologyType", values["technology_type"], 1, 50)
    problems.length("description", values["description"], 0, 5000)
    return values


@dataclass(frozen=True)
class Kind:
    """What differs between writing an author, an institution and a technology."""

    model: Any
    type_name: str
    conflict: str
    validate: Callable[..., dict[str, Any]]
    source: Source[int, Any]
    saved: Callable[[Any], Any]


AUTHOR = Kind(
    AuthorModel, "Author", "an author with this email exists, or the institution does not",
    _author_values, sources.AUTHOR,
    lambda row: AuthorSaved(author=Author.from_record(row)),
)  # fmt: skip
INSTITUTION = Kind(
    InstitutionModel, "Institution", "an institution with this name exists",
    _institution_values, sources.INSTITUTION,
    lambda row: InstitutionSaved(institution=Institution.from_record(row)),
)  # fmt: skip
TECHNOLOGY = Kind(
    TechnologyModel, "Technology", "this version of this technology exists",
    _technology_values, sources.TECHNOLOGY,
    lambda row: TechnologySaved(technology=Technology.from_record(row)),
)  # fmt: skip


async def _write(info: Info, operation: Awaitable[Any], conflict: str) -> Any:
    """Run a write; a unique or foreign-key violation is the client's conflict, not a 500."""
    try:
        return await info.context.loaders.call(Store.POSTGRES, operation)
    except IntegrityError:
        return Conflict(message=conflict)


async def _written(info: Info, type_name: str, row_id: int) -> None:
    """After a write, no cached response that read the row, or a list of its type, is
    served again. Reports are filtered by their authors' institutions, so their lists
    change with an author; and a deleted author's reports are no longer theirs."""
    tags = [sources.entity_tag(type_name, row_id), sources.list_tag(type_name)]
    if type_name == "Author":
        tags += [sources.list_tag("Report"), sources.report_list_tag(ReportParent.AUTHOR, row_id)]
    await info.context.invalidate(*tags)


async def _saved(info: Info, kind: Kind, row_id: int) -> Any:
    await _written(info, kind.type_name, row_id)
    loaders = info.context.loaders
    loaders.clear(kind.source, row_id)
    row = await loaders.load(kind.source, row_id)
    if row is None:  # deleted by a concurrent request between the write and this read
        raise GatewayError("the row was deleted meanwhile", ErrorCode.NOT_FOUND)
    return kind.saved(row)


async def _create(info: Info, kind: Kind, given: object) -> Any:
    if denied := forbidden(info, Access.EDITOR):
        return denied
    problems = Problems()
    values = kind.validate(problems, given_fields(given), creating=True)
    if problems:
        return failed(problems)
    engine = info.context.connections.engine
    new_id = await _write(
        info, catalogue.insert_row(engine=engine, model=kind.model, values=values), kind.conflict
    )
    return new_id if isinstance(new_id, Conflict) else await _saved(info, kind, new_id)


async def _update(info: Info, kind: Kind, id: strawberry.ID, given: object) -> Any:
    if denied := forbidden(info, Access.EDITOR):
        return denied
    problems = Problems()
    row_id = problems.database_id("id", id, kind.type_name)
    values = kind.validate(problems, given_fields(given), creating=False)
    if problems or row_id is None:
        return failed(problems)
    engine = info.context.connections.engine
    found = await _write(
        info,
        catalogue.update_row(engine=engine, model=kind.model, row_id=row_id, values=values),
        kind.conflict,
    )
    if isinstance(found, Conflict):
        return found
    if not found:
        return NotFound(message=f"no such {kind.type_name.lower()}", id=id)
    return await _saved(info, kind, row_id)


@strawberry.type
class DirectoryMutation:
    @strawberry.mutation(description="Add an author; their email must be unused.")
    async def create_author(self, info: Info, input: AuthorInput) -> AuthorPayload:
        return await _create(info, AUTHOR, input)  # type: ignore[no-any-return]

    @strawberry.mutation(description="Change some of an author's fields.")
    async def update_author(
        self, info: Info, id: strawberry.ID, input: AuthorInput
    ) -> AuthorPayload:
        return await _update(info, AUTHOR, id, input)  # type: ignore[no-any-return]

    @strawberry.mutation(description="Remove an author who is nobody's primary author.")
    async def delete_author(self, info: Info, id: strawberry.ID) -> DeleteAuthorPayload:
        if denied := forbidden(info, Access.ADMIN):
            return denied
        problems = Problems()
        author_id = problems.database_id("id", id, "Author")
        if author_id is None:
            return NotFound(message="no such author", id=id)
        outcome = await info.context.loaders.call(
            Store.POSTGRES,
            catalogue.delete_author(engine=info.context.connections.engine, author_id=author_id),
        )
        if outcome.primary_of:
            return Conflict(
                message=f"the primary author of {outcome.primary_of} reports; reassign them first"
            )
        if not outcome.deleted:
            return NotFound(message="no such author", id=id)
        await _written(info, "Author", author_id)
        info.context.loaders.clear(sources.AUTHOR, author_id)
        return AuthorDeleted(deleted_id=id)

    @strawberry.mutation(description="Add an institution; its name must be unused.")
    async def create_institution(self, info: Info, input: InstitutionInput) -> InstitutionPayload:
        return await _create(info, INSTITUTION, input)  # type: ignore[no-any-return]

    @strawberry.mutation(description="Change some of an institution's fields.")
    async def update_institution(
        self, info: Info, id: strawberry.ID, input: InstitutionInput
    ) -> InstitutionPayload:
        return await _update(info, INSTITUTION, id, input)  # type: ignore[no-any-return]

    @strawberry.mutation(description="Add a technology; name and version must be unused.")
    async def create_technology(self, info: Info, input: TechnologyInput) -> TechnologyPayload:
        return await _create(info, TECHNOLOGY, input)  # type: ignore[no-any-return]
