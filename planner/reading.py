"""Which fields of each table's records an operation reads (see datasources/records.py).

Worked out once per document, from its text: for every field it selects on an object type
whose values are records of a table, the record fields behind it (a leaf's attribute, a
relation's key). The union over the whole document, whatever the variables, ``@skip`` and
``@include`` leave out, and wherever the type is met: one selection of reports reads what
every other does, so that a record fetched for one of them (a page's reports, primed for
lookups by id) serves all. A field whose reads are not declared (a resolver of Strawberry's,
a computed field without a path) has its table read whole.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLCompositeType,
    GraphQLObjectType,
    GraphQLSchema,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    is_abstract_type,
    visit,
)

from core.sources import RecordFields
from datasources.records import TABLE_OF_RECORD, Reading, fields_behind
from planner.projection import FieldPlan, Kind

# Documents whose reading is kept.
READINGS_KEPT = 1000


class Readings:
    """The reading of each document, worked out when it is first executed."""

    def __init__(
        self,
        schema: GraphQLSchema,
        record_fields: dict[str, RecordFields],
        field_plan: Callable[[GraphQLObjectType, str], FieldPlan],
    ) -> None:
        self._schema = schema
        self._record_fields = record_fields
        self._field_plan = field_plan
        # By the document's id, with a reference that tells whether it is still that
        # document: nodes compare (and hash) by their whole content, which is slow.
        self._kept: dict[int, tuple[weakref.ref[DocumentNode], Reading]] = {}

    def of(self, document: DocumentNode) -> Reading:
        key = id(document)
        kept = self._kept.get(key)
        if kept is not None and kept[0]() is document:
            return kept[1]
        reading = self._read(document)
        if len(self._kept) >= READINGS_KEPT:
            del self._kept[next(iter(self._kept))]
        # No callback to drop it when the document goes: it would close a cycle (these,
        # the reference, its callback), left to the cycle collector. A stale one is
        # replaced by the next document of its id, or leaves with the oldest.
        self._kept[key] = (weakref.ref(document), reading)
        return reading

    def _read(self, document: DocumentNode) -> Reading:
        read: dict[str, set[str]] = {}
        whole: set[str] = set()
        type_info = TypeInfo(self._schema)
        note = self._note

        class Fields(Visitor):
            def enter_field(self, node: FieldNode, *_: Any) -> None:
                parent = type_info.get_parent_type()
                if parent is not None and not node.name.value.startswith("__"):
                    note(parent, node.name.value, read, whole)

        visit(document, TypeInfoVisitor(type_info, Fields()))
        return {table: frozenset(fields) for table, fields in read.items() if table not in whole}

    def _note(
        self,
        parent: GraphQLCompositeType,
        name: str,
        read: dict[str, set[str]],
        whole: set[str],
    ) -> None:
        possible = self._schema.get_possible_types(parent) if is_abstract_type(parent) else [parent]
        for object_type in possible:
            assert isinstance(object_type, GraphQLObjectType)
            fields = self._record_fields.get(object_type.name)
            table = None if fields is None else TABLE_OF_RECORD.get(fields.record)
            if fields is None or table is None or name not in object_type.fields:
                continue
            behind = _fields_behind(self._field_plan(object_type, name), fields)
            if behind is None:
                whole.add(table)
            else:
                read.setdefault(table, set()).update(behind)


def _fields_behind(plan: FieldPlan, fields: RecordFields) -> tuple[str, ...] | None:
    if plan.kind is Kind.RESOLVER:
        return None
    name = plan.relation.key if plan.kind is Kind.RELATION else plan.python_name
    path = fields.path_of(name)
    return None if path is None else fields_behind(fields.record, path)
