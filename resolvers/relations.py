"""Relation fields declared as data: which source fills the field, from which attribute of
the parent, and how the fetched value (a record, a list of them, or None) becomes the
field's value.

``relation(...)`` makes the Strawberry field (its resolver asks the operation's loader of
that source) and keeps the declaration in the field's metadata, where the planner reads it:
both executors follow one declaration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import strawberry

from core.context import Context
from core.sources import Source

RELATION = "relation"


@dataclass(frozen=True)
class Relation:
    source: Source[Any, Any]
    # The parent's attribute whose value is the key.
    key: str
    build: Callable[[Any], Any]


def relation(
    source: Source[Any, Any],
    *,
    key: str,
    build: Callable[[Any], Any],
    name: str | None = None,
    description: str | None = None,
) -> Any:
    declared = Relation(source, key, build)

    async def resolve(root: Any, info: strawberry.Info[Context, None]) -> Any:
        key_value = getattr(root, key)
        # No key (an author of no institution): nothing to fetch.
        found = None if key_value is None else await info.context.loaders.load(source, key_value)
        return build(found)

    return strawberry.field(
        resolver=resolve, name=name, description=description, metadata={RELATION: declared}
    )


def relation_of(field: Any) -> Relation | None:
    """The relation a schema field declares, if it declares one."""
    metadata = getattr(field, "metadata", None) or {}
    found = metadata.get(RELATION)
    return found if isinstance(found, Relation) else None
