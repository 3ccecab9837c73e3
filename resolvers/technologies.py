"""The root field that lists technologies."""

from __future__ import annotations

from typing import Any

import strawberry

from core.context import Context
from datasources.models import Technology as TechnologyModel
from resolvers.catalogue import Technology
from resolvers.pagination import Connection, listing

Info = strawberry.Info[Context, None]
TECHNOLOGIES: Any = TechnologyModel.__table__
ORDERING = "technologies:name:asc"


@strawberry.type
class TechnologyQuery:
    @strawberry.field(description="Technologies by name, a page at a time.")
    async def technologies(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Technology]:
        return await listing(
            info, table=TECHNOLOGIES, ordering=ORDERING, node=Technology.from_record,
            first=first, after=after, last=last, before=before,
        )  # fmt: skip
