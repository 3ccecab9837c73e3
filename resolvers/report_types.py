"""Kinds of report: technical report, survey, case study..."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import strawberry

from core.context import Context
from datasources import listings
from datasources.models import ReportType as ReportTypeModel
from datasources.reports import ReportParent
from resolvers.nodes import Node, fields_of, to_global_id
from resolvers.report_lists import report_list

if TYPE_CHECKING:
    from sqlalchemy import Row


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

    reports = report_list(ReportParent.REPORT_TYPE, "The reports of this kind.")


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
