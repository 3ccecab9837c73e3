"""The root field that lists the kinds of report."""

from __future__ import annotations

from typing import Any

import strawberry

from core import sources
from core.context import Context
from datasources.models import ReportType as ReportTypeModel
from resolvers.catalogue import ReportType

Info = strawberry.Info[Context, None]
REPORT_TYPES: Any = ReportTypeModel.__table__


@strawberry.type
class ReportTypeQuery:
    @strawberry.field(description="Every kind of report, by name.")
    async def report_types(self, info: Info) -> list[ReportType]:
        loaders = info.context.loaders
        rows = await loaders.read(sources.every_row(REPORT_TYPES))
        for row in rows:
            loaders.prime(sources.REPORT_TYPE, row.id, row)
        return [ReportType.from_record(row) for row in rows]
