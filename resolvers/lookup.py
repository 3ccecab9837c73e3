"""Fetching any entity by its global ID."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import strawberry

from core import sources
from core.context import Context
from core.errors import ErrorCode, GatewayError
from core.sources import Source
from resolvers.catalogue import Author, Institution, Report, ReportType, Technology
from resolvers.nodes import Node, from_global_id

Info = strawberry.Info[Context, None]
MAX_NODES = 100

NODE_TYPES: dict[str, tuple[Source[int, Any], Callable[[Any], Node]]] = {
    "Report": (sources.REPORT, Report.from_record),
    "Author": (sources.AUTHOR, Author.from_record),
    "Institution": (sources.INSTITUTION, Institution.from_record),
    "ReportType": (sources.REPORT_TYPE, ReportType.from_record),
    "Technology": (sources.TECHNOLOGY, Technology.from_record),
}


async def _node(info: Info, global_id: str) -> Node | None:
    type_name, database_id = from_global_id(global_id)
    kind = NODE_TYPES.get(type_name)
    if kind is None:
        return None
    source, build = kind
    row = await info.context.loaders.load(source, database_id)
    return None if row is None else build(row)


@strawberry.type
class NodeQuery:
    @strawberry.field(description="Any object by its global ID; null if there is none.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        return await _node(info, id)

    @strawberry.field(description=f"Objects by their global IDs, in order (at most {MAX_NODES}).")
    async def nodes(self, info: Info, ids: list[strawberry.ID]) -> list[Node | None]:
        if len(ids) > MAX_NODES:
            raise GatewayError(f"at most {MAX_NODES} ids", ErrorCode.BAD_USER_INPUT, argument="ids")
        # Gathered, so that the loads of each type land in one batch.
        return list(await asyncio.gather(*(_node(info, value) for value in ids)))
