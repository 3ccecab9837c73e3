"""Authors, and their part in reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from core.auth import Access
from core.context import Context
from core.errors import ErrorCode, GatewayError
from datasources.models import Author as AuthorModel
from datasources.reports import ReportParent
from resolvers import institutions
from resolvers.nodes import Node, fields_of, to_global_id
from resolvers.pagination import Connection, connection, listing, page_request, parse_text
from resolvers.report_lists import report_list

if TYPE_CHECKING:
    from sqlalchemy import Row

    from resolvers.institutions import Institution

Info = strawberry.Info[Context, None]
AUTHORS: Any = AuthorModel.__table__
ORDERING = "authors:name:asc"


@strawberry.type(description="A person who writes reports.")
class Author(Node):
    database_id: int
    name: str
    orcid: str | None
    institution_id: strawberry.Private[int | None]
    email_address: strawberry.Private[str]

    @classmethod
    def from_row(cls, row: Row[Any]) -> Author:
        return cls(
            id=to_global_id("Author", row.id),
            database_id=row.id,
            institution_id=row.institution_id,
            email_address=row.email,
            **fields_of(row, "name", "orcid"),
        )

    @strawberry.field(description="For readers and above; null with FORBIDDEN otherwise.")
    def email(self, info: Info) -> str | None:
        if not info.context.viewer.can(Access.READER):
            raise GatewayError(
                "Author.email is for readers and above: authenticate with a reader key or token",
                ErrorCode.FORBIDDEN,
            )
        return self.email_address

    @strawberry.field
    async def institution(
        self, info: Info
    ) -> Annotated["Institution", strawberry.lazy("resolvers.institutions")] | None:
        if self.institution_id is None:
            return None
        row = await info.context.loaders.institution.load(self.institution_id)
        return None if row is None else institutions.Institution.from_row(row)

    reports = report_list(ReportParent.AUTHOR, "The reports this author wrote or co-wrote.")


@strawberry.type(description="An author's part in one report.")
class Authorship:
    author: Author
    is_primary: bool
    position: int

    @classmethod
    def from_row(cls, row: Row[Any]) -> Authorship:
        return cls(
            author=Author.from_row(row), is_primary=row.is_primary_author, position=row.position
        )


def author_connection(page: Any, counter: Any) -> Connection[Author]:
    return connection(page, ordering=ORDERING, node=Author.from_row, counter=counter)


def author_page_request(
    first: int | None, after: str | None, last: int | None, before: str | None
) -> Any:
    return page_request(
        first=first, after=after, last=last, before=before, ordering=ORDERING, parse=parse_text
    )


@strawberry.type
class AuthorQuery:
    @strawberry.field(description="Authors by name, a page at a time.")
    async def authors(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Author]:
        return await listing(
            info, table=AUTHORS, ordering=ORDERING, node=Author.from_row,
            first=first, after=after, last=last, before=before,
        )  # fmt: skip
