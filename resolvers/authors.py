"""The root field that lists authors."""

from __future__ import annotations

from typing import Any

import strawberry

from core.context import Context
from datasources.models import Author as AuthorModel
from resolvers.catalogue import AUTHOR_ORDERING, Author
from resolvers.pagination import Connection, listing

Info = strawberry.Info[Context, None]
AUTHORS: Any = AuthorModel.__table__


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
            info, table=AUTHORS, ordering=AUTHOR_ORDERING, node=Author.from_record,
            first=first, after=after, last=last, before=before,
        )  # fmt: skip
