"""The planned executor of query operations.

graphql-core completes a result field by field: a resolver call and a future per field per
object, which under load is most of the gateway's CPU. This executor walks the operation
one *level* at a time instead:

1. For every object of the level and every field selected on it: a plain attribute is
   read and serialised at once; a relation (declared in the field's metadata, see
   resolvers/relations.py) adds the object's key to its source's batch; any other field
   is resolved by the field's own resolver, Strawberry's, called directly.
2. Every batch of the level is loaded at once (one store call per source, the stores
   concurrently), and the awaited resolvers with them.
3. The values are completed into the response: leaves serialised, objects queued for the
   next level.

Field collection (fragments, ``@skip``/``@include``, aliases) is graphql-core's own, once
per type and selection, not per object. Errors are located and masked as on the other
path, and a null in a non-null field propagates to the nearest nullable parent.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from inspect import isawaitable
from typing import Any, TypeGuard

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    located_error,
)
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from graphql.pyutils import Path
from graphql.type.definition import GraphQLResolveInfoHelpers

from core.context import Context
from core.sources import Source

RELATION = "relation"
INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})
INCREMENTAL = frozenset({"defer", "stream"})
MAX_VARIABLE_ERRORS = 50


class Kind(Enum):
    ATTRIBUTE = 1
    RELATION = 2
    RESOLVER = 3


@dataclass(frozen=True, slots=True)
class Shape:
    """An output type, unwrapped once: what completing a value of it takes."""

    non_null: bool
    # A scalar or an enum: how to serialise it.
    serialize: Callable[[Any], Any] | None = None
    # A list: the shape of its items.
    item: Shape | None = None
    # An object type; None for an interface or union, whose object type is the value's.
    object_type: GraphQLObjectType | None = None


def shape_of(output_type: Any) -> Shape:
    non_null = isinstance(output_type, GraphQLNonNull)
    nullable = output_type.of_type if non_null else output_type
    if isinstance(nullable, GraphQLScalarType | GraphQLEnumType):
        return Shape(non_null, serialize=nullable.serialize)
    if isinstance(nullable, GraphQLList):
        return Shape(non_null, item=shape_of(nullable.of_type))
    if isinstance(nullable, GraphQLObjectType):
        return Shape(non_null, object_type=nullable)
    return Shape(non_null)


@dataclass(frozen=True, slots=True)
class FieldPlan:
    kind: Kind
    definition: GraphQLField
    python_name: str
    shape: Shape
    relation: Any = None
    # For an attribute that holds a scalar or an enum: its serialisation, the fast path.
    serialize: Callable[[Any], Any] | None = None


@dataclass(slots=True)
class Slot:
    """Where a value sits in the response, and whether null may stand there; a null in a
    non-null field nulls the nearest nullable slot above it."""

    container: Any
    key: Any
    nullable: bool
    parent: Slot | None
    dead: bool = False

    def alive(self) -> bool:
        slot: Slot | None = self
        while slot is not None:
            if slot.dead:
                return False
            slot = slot.parent
        return True


@dataclass
class Outcome:
    data: dict[str, Any] | None
    errors: list[GraphQLError]


@dataclass(slots=True)
class _Item:
    value: Any
    type: GraphQLObjectType
    fields: list[FieldDetails]
    out: dict[str, Any]
    slot: Slot
    path: Trail


@dataclass(slots=True)
class _Field:
    """One field of one object of a level, on its way into the response."""

    item: _Item
    key: str
    plan: FieldPlan
    details: list[FieldDetails]

    @property
    def path(self) -> tuple[Any, str | int, str | None]:
        return (self.item.path, self.key, self.item.type.name)


# Where a value is, as a chain of (the parent's trail, key, type name): made for every
# value that nests, so it is a plain tuple; turned into graphql-core's Path or a list only
# for an error or a resolver's info.
Trail = tuple[Any, str | int, str | None] | None


def as_list(trail: Trail) -> list[str | int]:
    keys: list[str | int] = []
    while trail is not None:
        trail, key, _ = trail
        keys.append(key)
    keys.reverse()
    return keys


def as_path(trail: tuple[Any, str | int, str | None]) -> Path:
    parent, key, type_name = trail
    return Path(None if parent is None else as_path(parent), key, type_name)


# A field of a selection, planned: its response key, its plan (None for __typename), and
# the nodes it was selected by.
Entry = tuple[str, FieldPlan | None, list[FieldDetails]]


def plannable(document: DocumentNode, operation: OperationDefinitionNode) -> bool:
    """Queries without introspection or incremental delivery; everything else runs on
    Strawberry's executor."""
    if operation.operation is not OperationType.QUERY:
        return False
    for selection in operation.selection_set.selections:
        name = getattr(getattr(selection, "name", None), "value", None)
        if name in INTROSPECTION_ROOTS:
            return False
    return not _uses_incremental_delivery(document)


def _uses_incremental_delivery(document: DocumentNode) -> bool:
    pending = list(document.definitions)
    while pending:
        node = pending.pop()
        for directive in getattr(node, "directives", None) or ():
            if directive.name.value in INCREMENTAL:
                return True
        selection_set = getattr(node, "selection_set", None)
        if selection_set is not None:
            pending.extend(selection_set.selections)
    return False


class Planner:
    """Field plans of one schema, made once per field and kept."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema
        self._plans: dict[tuple[str, str], FieldPlan] = {}

    def field_plan(self, parent: GraphQLObjectType, name: str) -> FieldPlan:
        plan = self._plans.get((parent.name, name))
        if plan is None:
            plan = self._plans[(parent.name, name)] = _plan_field(parent.fields[name], name)
        return plan

    async def execute(
        self,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: dict[str, Any] | None,
        context: Context,
    ) -> Outcome:
        coerced = get_variable_values(
            self.schema,
            operation.variable_definitions or (),
            variables or {},
            max_errors=MAX_VARIABLE_ERRORS,
        )
        if isinstance(coerced, list):
            return Outcome(None, coerced)
        return await _Run(self, document, operation, coerced, context).run()


def _plan_field(definition: GraphQLField, name: str) -> FieldPlan:
    strawberry_field = (definition.extensions or {}).get("strawberry-definition")
    python_name = getattr(strawberry_field, "python_name", name)
    relation = (getattr(strawberry_field, "metadata", None) or {}).get(RELATION)
    shape = shape_of(definition.type)
    if relation is not None:
        return FieldPlan(Kind.RELATION, definition, python_name, shape, relation)
    if getattr(strawberry_field, "base_resolver", None) is not None:
        return FieldPlan(Kind.RESOLVER, definition, python_name, shape)
    return FieldPlan(Kind.ATTRIBUTE, definition, python_name, shape, serialize=shape.serialize)


class _Run:
    def __init__(
        self,
        planner: Planner,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: VariableValues,
        context: Context,
    ) -> None:
        self.planner = planner
        self.schema = planner.schema
        self.operation = operation
        self.variables = variables
        self.context = context
        self.fragment_definitions = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        self.fragments = {
            name: FragmentDetails(definition)
            for name, definition in self.fragment_definitions.items()
        }
        self.errors: list[GraphQLError] = []
        self._subfields: dict[tuple[str, int], list[Entry]] = {}
        self._helpers = GraphQLResolveInfoHelpers(gather=_gather, track=_ignore)

    async def run(self) -> Outcome:
        root_type = self.schema.query_type
        assert root_type is not None
        result: dict[str, Any] = {"data": {}}
        data: dict[str, Any] = result["data"]
        grouped = collect_fields(
            self.schema, self.fragments, self.variables, root_type, self.operation
        ).grouped_field_set
        level = [
            _Item(None, root_type, [], data, Slot(result, "data", nullable=True, parent=None), None)
        ]
        self._subfields[(root_type.name, id(level[0].fields))] = self._entries(root_type, grouped)
        while level:
            level = await self._level(level)
        return Outcome(result["data"], self.errors)

    def _fields_of(self, item: _Item) -> list[Entry]:
        """The fields selected on ``item``: collected once for all the objects of one type
        under one selection."""
        memo_key = (item.type.name, id(item.fields))
        entries = self._subfields.get(memo_key)
        if entries is None:
            grouped = collect_subfields(
                self.schema,
                self.fragments,
                self.variables,
                self.operation,
                item.type,
                item.fields,
            ).grouped_field_set
            entries = self._subfields[memo_key] = self._entries(item.type, grouped)
        return entries

    def _entries(
        self, parent: GraphQLObjectType, grouped: dict[str, list[FieldDetails]]
    ) -> list[Entry]:
        return [
            (
                key,
                None
                if details[0].node.name.value == "__typename"
                else self.planner.field_plan(parent, details[0].node.name.value),
                details,
            )
            for key, details in grouped.items()
        ]

    async def _level(self, items: list[_Item]) -> list[_Item]:
        following: list[_Item] = []
        batches: dict[Source[Any, Any], list[_Field]] = defaultdict(list)
        awaited: list[tuple[Awaitable[Any], _Field]] = []
        for item in items:
            if item.slot.alive():
                self._collect(item, following, batches, awaited)
        await self._settle(batches, awaited, following)
        return following

    def _collect(
        self,
        item: _Item,
        following: list[_Item],
        batches: dict[Source[Any, Any], list[_Field]],
        awaited: list[tuple[Awaitable[Any], _Field]],
    ) -> None:
        """Every field of one object of the level: the leaves at once, the rest into the
        level's batches and awaited resolvers."""
        out = item.out
        value = item.value
        for key, plan, details in self._fields_of(item):
            if plan is None:
                out[key] = item.type.name
                continue
            serialize = plan.serialize
            if serialize is not None:
                # The bulk of a response: a scalar read off the object, serialised.
                leaf = getattr(value, plan.python_name)
                if leaf is None:
                    out[key] = None
                    if plan.shape.non_null:
                        self._complete(None, _Field(item, key, plan, details), following)
                    continue
                try:
                    out[key] = serialize(leaf)
                except Exception as error:  # it becomes the field's error
                    self._fail(error, _Field(item, key, plan, details))
                continue
            out[key] = None  # its place in the response's order
            field = _Field(item, key, plan, details)
            if plan.kind is Kind.ATTRIBUTE:
                self._complete(getattr(value, plan.python_name), field, following)
            elif plan.kind is Kind.RELATION:
                if getattr(item.value, plan.relation.key) is None:
                    self._build(field, None, following)
                else:
                    batches[plan.relation.source].append(field)
            else:
                self._resolve(field, following, awaited)

    def _resolve(
        self, field: _Field, following: list[_Item], awaited: list[tuple[Awaitable[Any], _Field]]
    ) -> None:
        definition = field.plan.definition
        nodes = [detail.node for detail in field.details]
        try:
            arguments = get_argument_values(definition, nodes[0], self.variables)
            info = GraphQLResolveInfo(
                nodes[0].name.value,
                nodes,
                definition.type,
                field.item.type,
                as_path(field.path),
                self.schema,
                self.fragment_definitions,
                None,
                self.operation,
                self.variables,
                self.context,
                _is_awaitable,
                None,
                self._helpers,
            )
            assert definition.resolve is not None
            value = definition.resolve(field.item.value, info, **arguments)
        except Exception as error:  # it becomes the field's error
            self._fail(error, field)
            return
        if isawaitable(value):
            awaited.append((value, field))
        else:
            self._complete(value, field, following)

    async def _settle(
        self,
        batches: dict[Source[Any, Any], list[_Field]],
        awaited: list[tuple[Awaitable[Any], _Field]],
        following: list[_Item],
    ) -> None:
        """Every batch of the level in one call per source, and every awaited resolver,
        all at once; then their values into the response."""
        loaders = self.context.loaders
        sources = list(batches)
        fetches = [
            loaders.batch(
                source,
                [getattr(field.item.value, field.plan.relation.key) for field in batches[source]],
            )
            for source in sources
        ]
        outcomes = await asyncio.gather(
            *fetches, *(value for value, _ in awaited), return_exceptions=True
        )
        for source, fetched in zip(sources, outcomes, strict=False):
            for index, field in enumerate(batches[source]):
                if isinstance(fetched, BaseException):
                    self._fail(fetched, field)
                else:
                    self._build(field, fetched[index], following)
        for (_, field), value in zip(awaited, outcomes[len(sources) :], strict=True):
            if isinstance(value, BaseException):
                self._fail(value, field)
            else:
                self._complete(value, field, following)

    def _build(self, field: _Field, fetched: Any, following: list[_Item]) -> None:
        try:
            value = field.plan.relation.build(fetched)
        except Exception as error:  # it becomes the field's error
            self._fail(error, field)
            return
        self._complete(value, field, following)

    def _fail(self, error: BaseException, field: _Field) -> None:
        if not isinstance(error, Exception):
            raise error
        nodes = [detail.node for detail in field.details]
        if not field.plan.shape.non_null:
            self.errors.append(located_error(error, nodes, as_list(field.path)))
            field.item.out[field.key] = None
        elif field.item.slot.alive():
            self.errors.append(located_error(error, nodes, as_list(field.path)))
            _null_above(field.item.slot)
        # Otherwise an earlier failure has nulled what this one would: as in graphql-core,
        # only the first failure that propagates to a place is reported.

    def _complete(self, value: Any, field: _Field, following: list[_Item]) -> None:
        shape = field.plan.shape
        slot = Slot(field.item.out, field.key, not shape.non_null, field.item.slot)
        try:
            self._place(
                value, shape, slot, details=field.details, path=field.path, following=following
            )
        except _FieldError as failure:
            self._fail(failure.error, field)

    def _place(
        self,
        value: Any,
        shape: Shape,
        slot: Slot,
        *,
        details: list[FieldDetails],
        path: Trail,
        following: list[_Item],
    ) -> None:
        """Put ``value`` in ``slot``: serialised, as a list, or as an object of the next
        level. A failure of the value itself raises; one of a list item is that item's."""
        if value is None:
            if shape.non_null:
                raise _FieldError(
                    TypeError(f"Cannot return null for non-nullable field at {as_list(path)}.")
                )
            slot.container[slot.key] = None
        elif shape.serialize is not None:
            try:
                slot.container[slot.key] = shape.serialize(value)
            except Exception as error:
                raise _FieldError(error) from error
        elif shape.item is not None:
            self._place_list(
                value, shape.item, slot, details=details, path=path, following=following
            )
        else:
            out: dict[str, Any] = {}
            slot.container[slot.key] = out
            concrete = shape.object_type or self._concrete_type(value)
            following.append(_Item(value, concrete, details, out, slot, path))

    def _place_list(
        self,
        values: Sequence[Any],
        item: Shape,
        slot: Slot,
        *,
        details: list[FieldDetails],
        path: Trail,
        following: list[_Item],
    ) -> None:
        placed: list[Any] = [None] * len(values)
        slot.container[slot.key] = placed
        nullable = not item.non_null
        for index, value in enumerate(values):
            item_path = (path, index, None)
            try:
                self._place(
                    value,
                    item,
                    Slot(placed, index, nullable, slot),
                    details=details,
                    path=item_path,
                    following=following,
                )
            except _FieldError as failure:
                if nullable or slot.alive():
                    nodes = [detail.node for detail in details]
                    self.errors.append(located_error(failure.error, nodes, as_list(item_path)))
                if nullable:
                    placed[index] = None
                else:
                    _null_above(slot)

    def _concrete_type(self, value: Any) -> GraphQLObjectType:
        """The object type of a value of an interface or union: a Node is one of the
        catalogue's types, none of them generic."""
        definition = getattr(type(value), "__strawberry_definition__", None)
        found = self.schema.get_type(definition.name) if definition is not None else None
        if not isinstance(found, GraphQLObjectType):
            raise _FieldError(TypeError(f"no object type for {type(value).__name__}"))
        return found


class _FieldError(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _null_above(slot: Slot | None) -> None:
    """A non-null value failed in the object at ``slot``: null the nearest nullable slot."""
    while slot is not None:
        slot.dead = True
        if slot.nullable:
            slot.container[slot.key] = None
            return
        slot = slot.parent


def _is_awaitable(value: Any) -> TypeGuard[Awaitable[Any]]:
    return isawaitable(value)


async def _gather(values: Sequence[Awaitable[Any]]) -> list[Any]:
    return list(await asyncio.gather(*values))


def _ignore(_: Sequence[Any]) -> None:
    """Nothing to track: every awaitable of a level is awaited before the next."""
