"""The root field that lists institutions."""

from __future__ import annotations

from typing import Any

import strawberry

from core.context import Context
from datasources.models import Institution as InstitutionModel
from resolvers.catalogue import Institution
from resolvers.pagination import Connection, listing

Info = strawberry.Info[Context, None]
INSTITUTIONS: Any = InstitutionModel.__table__
ORDERING = "institutions:name:asc"


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
            info, table=INSTITUTIONS, ordering=ORDERING, node=Institution.from_record,
            first=first, after=after, last=last, before=before,
        )  # fmt: skip
