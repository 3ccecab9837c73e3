"""Institutions and their authors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from core.context import Context
from datasources.models import Institution as InstitutionModel
from resolvers import authors
from resolvers.nodes import Node, fields_of, to_global_id
from resolvers.pagination import Connection, listing

if TYPE_CHECKING:
    from sqlalchemy import Row

    from resolvers.authors import Author

Info = strawberry.Info[Context, None]
INSTITUTIONS: Any = InstitutionModel.__table__
ORDERING = "institutions:name:asc"


@strawberry.type(description="A university, laboratory or company that authors belong to.")
class Institution(Node):
    database_id: int
    name: str
    country: str | None
    website: str | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> Institution:
        return cls(
            id=to_global_id("Institution", row.id),
            database_id=row.id,
            **fields_of(row, "name", "country", "website"),
        )

    @strawberry.field(description="The institution's authors, by name.")
    async def authors(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Annotated["Author", strawberry.lazy("resolvers.authors")]]:
        request = authors.author_page_request(first, after, last, before)
        loaders = info.context.loaders
        page = await loaders.author_pages_by_institution(request).load(self.database_id)
        return authors.author_connection(
            page, lambda: loaders.author_counts_by_institution().load(self.database_id)
        )


@strawberry.type
class InstitutionQuery:
    @strawberry.field(description="Institutions by name, a page at a time.")
    async def institutions(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Institution]:
        return await listing(
            info, table=INSTITUTIONS, ordering=ORDERING, node=Institution.from_row,
            first=first, after=after, last=last, before=before,
        )  # fmt: skip
