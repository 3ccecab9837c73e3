"""Technologies that reports use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import strawberry

from core.context import Context
from datasources.models import Technology as TechnologyModel
from datasources.reports import ReportParent
from resolvers.nodes import Node, fields_of, to_global_id
from resolvers.pagination import Connection, listing
from resolvers.report_lists import report_list

if TYPE_CHECKING:
    from sqlalchemy import Row


Info = strawberry.Info[Context, None]
TECHNOLOGIES: Any = TechnologyModel.__table__
ORDERING = "technologies:name:asc"


@strawberry.type(description="A technology, in one version.")
class Technology(Node):
    database_id: int
    name: str
    version: str
    description: str | None
    technology_type: str

    @classmethod
    def from_row(cls, row: Row[Any]) -> Technology:
        return cls(
            id=to_global_id("Technology", row.id),
            database_id=row.id,
            **fields_of(row, "name", "version", "description", "technology_type"),
        )

    reports = report_list(ReportParent.TECHNOLOGY, "The reports that use this technology.")


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
            info, table=TECHNOLOGIES, ordering=ORDERING, node=Technology.from_row,
            first=first, after=after, last=last, before=before,
        )  # fmt: skip
