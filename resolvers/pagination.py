"""Relay connections over keyset pages, with opaque cursors."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, ClassVar, Generic, TypeVar, cast

import orjson
import strawberry
from graphql import FieldNode, FragmentSpreadNode, InlineFragmentNode
from sqlalchemy import Table

from core import sources
from core.context import Context
from core.errors import ErrorCode, GatewayError
from core.sources import RecordFields
from datasources.keyset import Page, PageRequest, Position
from datasources.models import LARGEST_INTEGER, SMALLEST_INTEGER

TOTAL_COUNT = "totalCount"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

NodeType = TypeVar("NodeType")


@strawberry.type(description="Where a page stands in its list.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


class PageEntry(Generic[NodeType]):
    """One edge of a page, as the page gives it: a record and its position.

    Its ``cursor`` and ``node`` are made only when read, so an edge costs nothing for what
    a query does not select. Strawberry's executor reads them as any object's attributes;
    the planner reads the record itself as the node (see ``Edge.record_fields``), with no
    object built.
    """

    __slots__ = ("build", "ordering", "record", "sort_key")

    def __init__(
        self, record: Any, sort_key: Any, ordering: str, build: Callable[[Any], NodeType]
    ) -> None:
        self.record = record
        self.sort_key = sort_key
        self.ordering = ordering
        self.build = build

    @property
    def cursor(self) -> str:
        return encode_cursor(self.ordering, (self.sort_key, self.record.id))

    @property
    def node(self) -> NodeType:
        return self.build(self.record)


@strawberry.type
class Edge(Generic[NodeType]):
    cursor: str
    node: NodeType

    record_fields: ClassVar[RecordFields] = RecordFields(
        PageEntry, {"cursor": "cursor", "node": "record"}
    )


@strawberry.type
class Connection(Generic[NodeType]):
    edges: list[Edge[NodeType]]
    page_info: PageInfo
    counter: strawberry.Private[Callable[[], Awaitable[int]]]

    # Read with the page, where it was asked for with it (see ``selects_total_count``).
    total: strawberry.Private[int | None] = None

    @strawberry.field(description="How many items the whole list has, across all pages.")
    async def total_count(self) -> int:
        return self.total if self.total is not None else await self.counter()


def selects_total_count(info: strawberry.Info[Any, Any]) -> bool:
    """Whether the connection resolved has its ``totalCount`` selected, directly or in a
    fragment (whatever its ``@skip``/``@include``): its page is then read with its length,
    in one statement. Read off the field's nodes, not Strawberry's ``selected_fields``,
    which converts the whole selection below, arguments and all."""
    raw = info._raw_info
    pending = [node.selection_set for node in raw.field_nodes]
    spread: set[str] = set()
    while pending:
        selection_set = pending.pop()
        for selection in selection_set.selections if selection_set is not None else ():
            if isinstance(selection, FieldNode):
                if selection.name.value == TOTAL_COUNT:
                    return True
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = raw.fragments.get(name)
                if fragment is not None and name not in spread:
                    spread.add(name)
                    pending.append(fragment.selection_set)
    return False


def encode_cursor(ordering: str, position: Position) -> str:
    value, row_id = position
    if isinstance(value, date):
        value = value.isoformat()
    payload = orjson.dumps([ordering, value, row_id])
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(
    cursor: str, ordering: str, parse: Callable[[Any], Any], argument: str
) -> Position:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        tag, value, row_id = json.loads(base64.urlsafe_b64decode(padded))
        if tag != ordering:
            raise ValueError(cursor)
        return parse(value), parse_int(row_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as error:
        raise GatewayError(
            f"{argument}: {cursor!r} is not a cursor of this list and ordering",
            ErrorCode.BAD_USER_INPUT,
            argument=argument,
        ) from error


def page_request(
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    ordering: str,
    parse: Callable[[Any], Any],
) -> PageRequest:
    """Validate Relay arguments into a page request, or refuse them with BAD_USER_INPUT."""
    if first is not None and last is not None:
        raise GatewayError(
            "give either first or last, not both", ErrorCode.BAD_USER_INPUT, argument="last"
        )
    for argument, size in (("first", first), ("last", last)):
        if size is not None and not 0 <= size <= MAX_PAGE_SIZE:
            raise GatewayError(
                f"{argument} must be between 0 and {MAX_PAGE_SIZE}, got {size}",
                ErrorCode.BAD_USER_INPUT,
                argument=argument,
            )
    backward = last is not None or (first is None and before is not None)
    size = last if backward else first
    return PageRequest(
        limit=DEFAULT_PAGE_SIZE if size is None else size,
        after=None if after is None else decode_cursor(after, ordering, parse, "after"),
        before=None if before is None else decode_cursor(before, ordering, parse, "before"),
        backward=backward,
    )


def connection(
    page: Page,
    *,
    ordering: str,
    node: Callable[[Any], NodeType],
    counter: Callable[[], Awaitable[int]],
) -> Connection[NodeType]:
    edges = [
        PageEntry(record, sort_key, ordering, node)
        for record, sort_key in zip(page.records, page.sort_keys, strict=True)
    ]
    return Connection(
        # Read like edges, through their attributes.
        edges=cast("list[Edge[NodeType]]", edges),
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        counter=counter,
        total=page.total,
    )


def parse_date(value: Any) -> date:
    if not isinstance(value, str):
        raise TypeError(value)
    return date.fromisoformat(value)


def parse_text(value: Any) -> str:
    # No text column holds a NUL or a lone surrogate: a statement given one fails in the
    # driver. (encode raises a ValueError for the latter.)
    if not isinstance(value, str) or "\x00" in value:
        raise TypeError(value)
    value.encode()
    return value


def parse_int(value: Any) -> int:
    """An integer a column can hold: cursors carry ids, word counts and counters."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(value)
    if not SMALLEST_INTEGER <= value <= LARGEST_INTEGER:
        raise ValueError(value)
    return value


async def listing(
    info: strawberry.Info[Context, None],
    *,
    table: Table,
    ordering: str,
    node: Callable[[Any], NodeType],
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> Connection[NodeType]:
    """A root list of named entities (authors, institutions, technologies), by name."""
    request = page_request(
        first=first, after=after, last=last, before=before, ordering=ordering, parse=parse_text
    )
    loaders = info.context.loaders
    page = await loaders.read(
        sources.listed_entities(table, request, counted=selects_total_count(info))
    )
    count = sources.counted_entities(table)
    return connection(page, ordering=ordering, node=node, counter=lambda: loaders.read(count))


def listing_field(
    *, table: Table, ordering: str, node: Callable[[Any], Any], description: str
) -> Any:
    """A root field that lists named entities by name, a page at a time."""

    async def resolve(
        root: Any,
        info: strawberry.Info[Context, None],
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Any:
        return await listing(
            info, table=table, ordering=ordering, node=node,
            first=first, after=after, last=last, before=before,
        )  # fmt: skip

    return strawberry.field(resolver=resolve, description=description)
