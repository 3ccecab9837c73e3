"""Kinds of report: technical report, survey, case study..."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from datasources import listings
from datasources.models import ReportType as ReportTypeModel
from datasources.reports import ReportParent
from gateway.context import Context
from resolvers import reports
from resolvers.nodes import Node, fields_of, to_global_id
from resolvers.pagination import Connection

if TYPE_CHECKING:
    from sqlalchemy import Row

    from resolvers.reports import Report, ReportOrder

Info = strawberry.Info[Context, None]
REPORT_TYPES: Any = ReportTypeModel.__table__


@strawberry.type(description="A kind of report.")
class ReportType(Node):
    database_id: int
    name: str
    description: str | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> ReportType:
        return cls(
            id=to_global_id("ReportType", row.id),
            database_id=row.id,
            **fields_of(row, "name", "description"),
        )

    @strawberry.field(description="The reports of this kind.")
    async def reports(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        order_by: Annotated["ReportOrder", strawberry.lazy("resolvers.reports")] | None = None,
    ) -> Connection[Annotated["Report", strawberry.lazy("resolvers.reports")]]:
        return await reports.reports_under(
            info, ReportParent.REPORT_TYPE, self.database_id,
            first=first, after=after, last=last, before=before, order_by=order_by,
        )  # fmt: skip


@strawberry.type
class ReportTypeQuery:
    @strawberry.field(description="Every kind of report, by name.")
    async def report_types(self, info: Info) -> list[ReportType]:
        loaders = info.context.loaders
        rows = await loaders.call(
            "postgres",
            listings.all_by_name(engine=info.context.connections.engine, table=REPORT_TYPES),
        )
        for row in rows:
            loaders.report_type.prime(row.id, row)
        return [ReportType.from_row(row) for row in rows]
