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
    # For a field whose value is made of records: the record (or list of records, or None)
    # the fetched value gives it, which the planner projects with no object built.
    records: Callable[[Any], Any] | None = None
    # The source reading only the given paths of the records (see RecordFields.paths),
    # which the planner asks for when every field selected under the relation has one.
    # The paths are the field's own type's: a relation that picks its value out of what
    # the source fetched (``records``) declares none.
    narrow: Callable[[frozenset[str]], Source[Any, Any]] | None = None


def relation(
    source: Source[Any, Any],
    *,
    key: str,
    build: Callable[[Any], Any],
    name: str | None = None,
    description: str | None = None,
    records: Callable[[Any], Any] | None = None,
    narrow: Callable[[frozenset[str]], Source[Any, Any]] | None = None,
) -> Any:
    declared = Relation(source, key, build, records, narrow)

    async def resolve(root: Any, info: strawberry.Info[Context, None]) -> Any:
        key_value = getattr(root, key)
        # No key (an author of no institution): nothing to fetch.
        found = None if key_value is None else await info.context.loaders.load(source, key_value)
        return build(found)

    return strawberry.field(
        resolver=resolve, name=name, description=description, metadata={RELATION: declared}
    )


def record_relation(
    source: Source[Any, Any],
    *,
    key: str,
    node: Callable[[], Any],
    many: bool = False,
    pick: Callable[[Any], Any] = lambda fetched: fetched,
    name: str | None = None,
    description: str | None = None,
    narrow: Callable[[frozenset[str]], Source[Any, Any]] | None = None,
) -> Any:
    """A relation whose value is made of records of one object type (``node()``, named
    lazily: the types of a module refer to each other): ``pick`` finds the record, or the
    list of records with ``many``, in what the source fetched; each becomes the type's
    object through its ``from_record``."""

    def build(fetched: Any) -> Any:
        picked = pick(fetched)
        if many:
            return [node().from_record(record) for record in picked]
        return None if picked is None else node().from_record(picked)

    return relation(
        source,
        key=key,
        build=build,
        name=name,
        description=description,
        records=pick,
        narrow=narrow,
    )
