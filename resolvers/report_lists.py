"""The paginated `reports` field of the types that reports hang from (author, technology,
report type): one definition, so that every such list pages, orders and batches alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from resolvers.pagination import Connection

if TYPE_CHECKING:
    from core.context import Context
    from datasources.reports import ReportParent
    from resolvers.reports import Report, ReportOrder


def report_list(parent: ReportParent, description: str) -> Any:
    async def resolve(
        root: Any,
        info: strawberry.Info[Context, None],
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        order_by: Annotated["ReportOrder", strawberry.lazy("resolvers.reports")] | None = None,
    ) -> Connection[Annotated["Report", strawberry.lazy("resolvers.reports")]]:
        # Imported here: resolvers.reports imports the types that define this field.
        from resolvers.reports import reports_under  # noqa: PLC0415

        return await reports_under(
            info, parent, root.database_id,
            first=first, after=after, last=last, before=before, order_by=order_by,
        )  # fmt: skip

    return strawberry.field(resolver=resolve, description=description)
