"""The planned executor of query operations.

graphql-core completes a result field by field: a resolver call and a future per field per
object, which under load is most of the gateway's CPU. This executor walks the operation
one *level* at a time instead, and within a level one *group* at a time: the objects of
one type selected by the same fields.

1. A group's leaves (scalars, enums, ``__typename``) are projected by a function generated
   for its selection (see planner/projection.py): one dict display per object, no call per
   field. An object the generated code cannot project (a null where none may be, a value
   that does not serialise) is projected again field by field, which reports the error.
2. A relation (declared in the field's metadata, see resolvers/relations.py) adds every
   object's key to its source's batch, which reads only the stored paths the selections
   under it read where the relation can narrow its source; any other field is resolved by
   the field's own resolver, Strawberry's, called directly.
3. Every batch of the level is loaded at once (one store call per source, the stores
   concurrently), and the awaited resolvers with them; the values go into the response,
   objects into the next level's groups, except those selected by leaves alone, which
   are projected there and then.

Every read of the operation fetches only the fields of each table's records that the
document selects somewhere (see planner/reading.py); the rest come as NULL.

Field collection (fragments, ``@skip``/``@include``, aliases) is graphql-core's, once per
type and selection, not per object. Errors are located and masked as on the other path, and
a null in a non-null field propagates to the nearest nullable parent.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from inspect import isawaitable
from operator import attrgetter
from typing import Any, TypeGuard

from graphql import (
    DirectiveNode,
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
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

from core import telemetry
from core.context import Context
from core.sources import RecordFields, Source
from datasources.records import reading
from planner.projection import (
    Entry,
    FieldPlan,
    Kind,
    Projections,
    Projector,
    Shape,
    plan_field,
)
from planner.reading import Readings

INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})
INCREMENTAL = frozenset({"defer", "stream"})
MAX_VARIABLE_ERRORS = 50
# Operations whose collected fields are kept (see _Collected).
OPERATIONS_KEPT = 1000
# Attributes of a level's spans: its depth (the root's fields are 1), and the sources its
# batches read.
LEVEL = "gateway.level"
SOURCES = "gateway.sources"

# Where a value sits in the response: (container, key, whether null may stand there, the
# place of the object or list it is in). A null in a non-null place nulls the nearest
# nullable place above it. Made for every value that nests, so it is a plain tuple; the
# keys of its chain are the value's path.
Place = tuple[Any, Any, bool, Any]


@dataclass
class Outcome:
    data: dict[str, Any] | None
    errors: list[GraphQLError]


@dataclass(slots=True)
class _Group:
    """The objects of one type, selected by the same fields, in one level: Strawberry's
    objects, or the records they would be made from (read with ``fields``)."""

    type: GraphQLObjectType
    details: list[FieldDetails]
    fields: RecordFields | None
    values: list[Any] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)


@dataclass(slots=True)
class _Selection:
    entries: list[Entry]
    project: Projector
    # The fields the projection leaves as None (relations, resolvers, nested objects),
    # each with what reads its value (an attribute) or its key (a relation) off a value.
    deferred: list[tuple[Entry, Callable[[Any], Any] | None]]


@dataclass(slots=True)
class _Collected:
    """What running an operation works out from its document alone: its fragments, the
    fields collected on each type under each selection with their projections, and the
    stored paths each relation's selection reads. Kept from one run to the next unless a
    variable decides what is collected (``@skip``/``@include`` on a variable): collecting
    them again was 4% of the samples of a repeated nested query.

    Selections are memoised by their field details' ids, which stay theirs since the
    details are kept here with them."""

    fragment_definitions: dict[str, FragmentDefinitionNode]
    fragments: dict[str, FragmentDetails]
    root_details: list[FieldDetails] = field(default_factory=list)
    selections: dict[tuple[str, int, bool], _Selection] = field(default_factory=dict)
    paths: dict[int, frozenset[str] | None] = field(default_factory=dict)

    @classmethod
    def of(cls, document: DocumentNode) -> _Collected:
        definitions = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        return cls(
            definitions,
            {name: FragmentDetails(definition) for name, definition in definitions.items()},
        )


@dataclass(slots=True)
class _Chunk:
    """One relation of one group, waiting for its source's batch."""

    group: _Group
    outs: list[dict[str, Any]]
    entry: Entry
    indices: list[int]
    keys: list[Any]


@dataclass(slots=True)
class _Pending:
    """One resolver's awaitable, and where its value goes."""

    awaitable: Awaitable[Any]
    out: dict[str, Any]
    entry: Entry
    place: Place


def as_list(place: Place, key: str | None = None) -> list[str | int]:
    keys: list[str | int] = [] if key is None else [key]
    while place[3] is not None:
        keys.append(place[1])
        place = place[3]
    keys.reverse()
    return keys


def as_path(place: Place, key: str, type_name: str) -> Path:
    path: Path | None = None
    for step in as_list(place):
        path = Path(path, step, None)
    return Path(path, key, type_name)


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
    return any(directive.name.value in INCREMENTAL for directive in _directives(document))


def _collected_by_variables(document: DocumentNode) -> bool:
    """Whether a variable decides which fields are collected: a directive (``@skip``,
    ``@include``) given one."""
    return any(
        isinstance(argument.value, VariableNode)
        for directive in _directives(document)
        for argument in directive.arguments or ()
    )


def _directives(document: DocumentNode) -> Iterator[DirectiveNode]:
    pending: list[Any] = list(document.definitions)
    while pending:
        node = pending.pop()
        yield from getattr(node, "directives", None) or ()
        selection_set = getattr(node, "selection_set", None)
        if selection_set is not None:
            pending.extend(selection_set.selections)


class Planner:
    """Field plans and generated projections of one schema, made once and kept."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema
        self._plans: dict[tuple[str, str], FieldPlan] = {}
        self.projections = Projections()
        # How the fields of object types are read off records, where they are declared.
        self.record_fields: dict[str, RecordFields] = {}
        # The object type of a record met where an interface or union is expected: the one
        # type that declares that record (a record that several declare, none).
        self.record_types: dict[type[Any], tuple[GraphQLObjectType, RecordFields]] = {}
        declaring: defaultdict[type[Any], list[GraphQLObjectType]] = defaultdict(list)
        for graphql_type in schema.type_map.values():
            if isinstance(graphql_type, GraphQLObjectType):
                fields = record_fields_of(graphql_type)
                if fields is not None:
                    self.record_fields[graphql_type.name] = fields
                    declaring[fields.record].append(graphql_type)
        for record, types in declaring.items():
            if len(types) == 1:
                self.record_types[record] = (types[0], self.record_fields[types[0].name])
        self.readings = Readings(schema, self.record_fields, self.field_plan)
        # By the operation's id, with a reference that tells whether it is still that
        # operation (as planner/reading.py keeps readings); None for an operation whose
        # collection variables decide.
        self._collected: dict[
            int, tuple[weakref.ref[OperationDefinitionNode], _Collected | None]
        ] = {}

    def field_plan(self, parent: GraphQLObjectType, name: str) -> FieldPlan:
        plan = self._plans.get((parent.name, name))
        if plan is None:
            plan = self._plans[(parent.name, name)] = plan_field(parent.fields[name], name)
        return plan

    def collected(self, document: DocumentNode, operation: OperationDefinitionNode) -> _Collected:
        """What the runs of ``operation`` share, or a new one for a run of its own."""
        key = id(operation)
        kept = self._collected.get(key)
        if kept is None or kept[0]() is not operation:
            shared = None if _collected_by_variables(document) else _Collected.of(document)
            if len(self._collected) >= OPERATIONS_KEPT:
                del self._collected[next(iter(self._collected))]
            kept = self._collected[key] = (weakref.ref(operation), shared)
        return _Collected.of(document) if kept[1] is None else kept[1]

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
        with reading(self.readings.of(document)):
            collected = self.collected(document, operation)
            return await _Run(self, collected, operation, coerced, context).run()


class _Run:
    def __init__(
        self,
        planner: Planner,
        collected: _Collected,
        operation: OperationDefinitionNode,
        variables: VariableValues,
        context: Context,
    ) -> None:
        self.planner = planner
        self.schema = planner.schema
        self.operation = operation
        self.variables = variables
        self.context = context
        self.fragment_definitions = collected.fragment_definitions
        self.fragments = collected.fragments
        self._root_details = collected.root_details
        self.errors: list[GraphQLError] = []
        self._selections = collected.selections
        self._helpers = GraphQLResolveInfoHelpers(gather=_gather, track=_ignore)
        # Places nulled by a failure, kept alive so that their ids stay theirs.
        self._dead: dict[int, Place] = {}
        # The stored paths each relation's selection reads (see _stored_paths).
        self._paths = collected.paths
        self._depth = 0

    async def run(self) -> Outcome:
        root_type = self.schema.query_type
        assert root_type is not None
        result: dict[str, Any] = {"data": None}
        root = _Group(root_type, self._root_details, None, [None], [(result, "data", True, None)])
        root_key = (root_type.name, id(root.details), False)
        if root_key not in self._selections:
            grouped = collect_fields(
                self.schema, self.fragments, self.variables, root_type, self.operation
            ).grouped_field_set
            self._selections[root_key] = self._selection(root_type, grouped, None)
        level = [root]
        while level:
            level = await self._level(level)
        return Outcome(result["data"], self.errors)

    def _selection_of(self, group: _Group) -> _Selection:
        return self._selection_for(group.type, group.details, group.fields)

    def _selection_for(
        self,
        object_type: GraphQLObjectType,
        details: list[FieldDetails],
        fields: RecordFields | None,
    ) -> _Selection:
        """The fields selected on objects of a type: collected once for all the objects of
        that type under one selection."""
        memo_key = (object_type.name, id(details), fields is not None)
        selection = self._selections.get(memo_key)
        if selection is None:
            grouped = collect_subfields(
                self.schema, self.fragments, self.variables, self.operation, object_type, details
            ).grouped_field_set
            selection = self._selections[memo_key] = self._selection(object_type, grouped, fields)
        return selection

    def _projected_whole(
        self, values: Sequence[Any], shape: Shape, details: list[FieldDetails]
    ) -> list[Any] | None:
        """The dicts of objects whose selection is all leaves, made here at once rather
        than by the next level: most objects of a response (a report's type, its
        technologies, a document's sections) are such, and the next level's group costs
        each one a place and two list entries. None where they are not all such objects of
        one class, or one of them fails its projection (the next level then reports it)."""
        object_type = shape.object_type
        if object_type is None or not values:
            return None
        cls = values[0].__class__
        selection = self._selection_for(object_type, details, self._fields_of(object_type, cls))
        if selection.deferred or any(value.__class__ is not cls for value in values):
            return None
        outs, failed = selection.project(values)
        return None if failed else outs

    def _selection(
        self,
        parent: GraphQLObjectType,
        grouped: dict[str, list[FieldDetails]],
        fields: RecordFields | None,
    ) -> _Selection:
        entries: list[Entry] = [
            (
                key,
                None
                if details[0].node.name.value == "__typename"
                else self.planner.field_plan(parent, details[0].node.name.value),
                details,
            )
            for key, details in grouped.items()
        ]
        project = self.planner.projections.projector(parent.name, entries, fields)
        deferred = [
            (entry, _reader(entry[1], fields))
            for entry in entries
            if entry[1] is not None and not entry[1].projected
        ]
        return _Selection(entries, project, deferred)

    async def _level(self, groups: list[_Group]) -> list[_Group]:
        following: dict[tuple[str, int, bool], _Group] = {}
        batches: dict[Source[Any, Any], list[_Chunk]] = defaultdict(list)
        awaited: list[_Pending] = []
        self._depth += 1
        explained = self.context.loaders.explained
        if explained is not None:
            explained.level = self._depth
        with telemetry.span("plan level", **{LEVEL: self._depth}):
            for group in groups:
                if self._dead:
                    self._drop_dead(group)
                if group.values:
                    self._collect(group, following, batches, awaited)
        with telemetry.span("fetch level", **{LEVEL: self._depth, SOURCES: len(batches)}):
            await self._settle(batches, awaited, following)
        return list(following.values())

    def _drop_dead(self, group: _Group) -> None:
        alive = [index for index, place in enumerate(group.places) if self._alive(place)]
        group.values = [group.values[index] for index in alive]
        group.places = [group.places[index] for index in alive]

    def _collect(
        self,
        group: _Group,
        following: dict[tuple[str, int, bool], _Group],
        batches: dict[Source[Any, Any], list[_Chunk]],
        awaited: list[_Pending],
    ) -> None:
        """Every field of a group's objects: the leaves at once, the rest into the level's
        batches and awaited resolvers."""
        selection = self._selection_of(group)
        values, places = group.values, group.places
        outs, failed = selection.project(values)
        for out, (container, key, _, _) in zip(outs, places, strict=True):
            container[key] = out
        for index in failed:
            outs[index] = self._project_slowly(selection.entries, group, index, following)
        objects = values
        for entry, read in selection.deferred:
            plan = entry[1]
            assert plan is not None
            if plan.kind is Kind.RELATION:
                assert read is not None
                self._batch(group, outs, entry, read, batches=batches, following=following)
            elif plan.kind is Kind.ATTRIBUTE:
                assert read is not None
                self._complete_many(
                    [read(value) for value in values],
                    list(zip(outs, places, strict=True)),
                    entry,
                    following,
                )
            else:
                if objects is values and group.fields is not None:
                    # Resolvers are Strawberry's: they take the objects, not records.
                    origin = group.type.extensions["strawberry-definition"].origin
                    objects = [origin.from_record(value) for value in values]
                for index, value in enumerate(objects):
                    self._resolve(
                        value, outs[index], entry, group.type, group.places[index],
                        following=following, awaited=awaited,
                    )  # fmt: skip

    def _project_slowly(
        self,
        entries: list[Entry],
        group: _Group,
        index: int,
        following: dict[tuple[str, int, bool], _Group],
    ) -> dict[str, Any]:
        """The leaves of one object, field by field: what the generated projection does,
        with each failure reported on its own field."""
        value, place = group.values[index], group.places[index]
        out: dict[str, Any] = {}
        place[0][place[1]] = out
        for entry in entries:
            key, plan, _ = entry
            if plan is None:
                out[key] = group.type.name
            elif plan.projected:
                out[key] = None
                read = _reader(plan, group.fields)
                assert read is not None
                self._complete(read(value), out, entry, place, following)
            else:
                out[key] = None  # its place in the response's order
        return out

    def _batch(
        self,
        group: _Group,
        outs: list[dict[str, Any]],
        entry: Entry,
        read_key: Callable[[Any], Any],
        *,
        batches: dict[Source[Any, Any], list[_Chunk]],
        following: dict[tuple[str, int, bool], _Group],
    ) -> None:
        plan = entry[1]
        assert plan is not None
        indices: list[int] = []
        keys: list[Any] = []
        for index, value in enumerate(group.values):
            key = read_key(value)
            if key is None:
                self._build(None, outs[index], entry, group.places[index], following)
            else:
                indices.append(index)
                keys.append(key)
        if keys:
            batches[plan.relation.source].append(_Chunk(group, outs, entry, indices, keys))

    def _narrowest(self, source: Source[Any, Any], chunks: list[_Chunk]) -> Source[Any, Any]:
        """``source``, narrowed to the paths its chunks' selections read where every
        relation of the batch can narrow it: one store call for all of them still."""
        narrow = None
        paths: set[str] = set()
        for chunk in chunks:
            plan = chunk.entry[1]
            assert plan is not None
            narrow = plan.relation.narrow
            details = chunk.entry[2]
            if id(details) not in self._paths:
                self._paths[id(details)] = self._stored_paths(plan.shape, details)
            read = self._paths[id(details)]
            if narrow is None or read is None:
                return source
            paths.update(read)
        assert narrow is not None
        narrowed: Source[Any, Any] = narrow(frozenset(paths))
        return narrowed

    def _stored_paths(self, shape: Shape, details: list[FieldDetails]) -> frozenset[str] | None:
        """The stored paths the fields selected by ``details`` on a value of ``shape``
        read; None where one of them reads no known path (a resolver, say).

        Whole top-level paths: a path into the items of an array (``sections.heading``)
        is MongoDB's, not every server of its protocol's (the embedded one answers it with
        empty arrays).
        """
        while shape.item is not None:
            shape = shape.item
        object_type = shape.object_type
        fields = None if object_type is None else self.planner.record_fields.get(object_type.name)
        if object_type is None or fields is None:
            return None
        grouped = collect_subfields(
            self.schema, self.fragments, self.variables, self.operation, object_type, details
        ).grouped_field_set
        paths: set[str] = set()
        for selected in grouped.values():
            name = selected[0].node.name.value
            if name == "__typename":
                continue
            plan = self.planner.field_plan(object_type, name)
            path = fields.path_of(plan.python_name)
            if path is None or plan.kind is not Kind.ATTRIBUTE:
                return None
            paths.add(path)
        return frozenset(paths)

    def _resolve(
        self,
        value: Any,
        out: dict[str, Any],
        entry: Entry,
        parent_type: GraphQLObjectType,
        place: Place,
        *,
        following: dict[tuple[str, int, bool], _Group],
        awaited: list[_Pending],
    ) -> None:
        key, plan, details = entry
        assert plan is not None
        definition = plan.definition
        nodes = [detail.node for detail in details]
        try:
            arguments = get_argument_values(definition, nodes[0], self.variables)
            info = GraphQLResolveInfo(
                nodes[0].name.value,
                nodes,
                definition.type,
                parent_type,
                as_path(place, key, parent_type.name),
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
            resolved = definition.resolve(value, info, **arguments)
        except Exception as error:  # it becomes the field's error
            self._fail(error, out, entry, place)
            return
        if isawaitable(resolved):
            awaited.append(_Pending(resolved, out, entry, place))
        else:
            self._complete(resolved, out, entry, place, following)

    async def _settle(
        self,
        batches: dict[Source[Any, Any], list[_Chunk]],
        awaited: list[_Pending],
        following: dict[tuple[str, int, bool], _Group],
    ) -> None:
        """Every batch of the level in one call per source, and every awaited resolver,
        all at once; then their values into the response."""
        loaders = self.context.loaders
        sources = list(batches)
        fetches = [
            loaders.batch(
                self._narrowest(source, batches[source]),
                [key for chunk in batches[source] for key in chunk.keys],
            )
            for source in sources
        ]
        outcomes = await _settled([*fetches, *(pending.awaitable for pending in awaited)])
        for source, fetched in zip(sources, outcomes, strict=False):
            offset = 0
            for chunk in batches[source]:
                places, outs, entry = chunk.group.places, chunk.outs, chunk.entry
                if isinstance(fetched, BaseException):
                    for index in chunk.indices:
                        self._fail(fetched, outs[index], entry, places[index])
                    continue
                value_of = _value_of(entry)
                values: list[Any] = []
                targets: list[tuple[dict[str, Any], Place]] = []
                for index in chunk.indices:
                    try:
                        values.append(value_of(fetched[offset]))
                    except Exception as error:  # it becomes the field's error
                        self._fail(error, outs[index], entry, places[index])
                    else:
                        targets.append((outs[index], places[index]))
                    offset += 1
                self._complete_many(values, targets, entry, following)
        for pending, value in zip(awaited, outcomes[len(sources) :], strict=True):
            if isinstance(value, BaseException):
                self._fail(value, pending.out, pending.entry, pending.place)
            else:
                self._complete(value, pending.out, pending.entry, pending.place, following)

    def _build(
        self,
        fetched: Any,
        out: dict[str, Any],
        entry: Entry,
        place: Place,
        following: dict[tuple[str, int, bool], _Group],
    ) -> None:
        try:
            value = _value_of(entry)(fetched)
        except Exception as error:  # it becomes the field's error
            self._fail(error, out, entry, place)
            return
        self._complete(value, out, entry, place, following)

    def _fail(self, error: BaseException, out: dict[str, Any], entry: Entry, place: Place) -> None:
        """``error`` is the error of field ``entry`` of the object at ``place``."""
        if not isinstance(error, Exception):
            raise error
        key, plan, details = entry
        assert plan is not None
        nodes = [detail.node for detail in details]
        if not plan.shape.non_null:
            self.errors.append(located_error(error, nodes, as_list(place, key)))
            out[key] = None
        elif self._alive(place):
            self.errors.append(located_error(error, nodes, as_list(place, key)))
            self._null_above(place)
        # Otherwise an earlier failure has nulled what this one would: as in graphql-core,
        # only the first failure that propagates to a place is reported.

    def _complete(
        self,
        value: Any,
        out: dict[str, Any],
        entry: Entry,
        place: Place,
        following: dict[tuple[str, int, bool], _Group],
    ) -> None:
        key, plan, details = entry
        assert plan is not None
        shape = plan.shape
        try:
            self._place(value, shape, (out, key, not shape.non_null, place), details, following)
        except _FieldError as failure:
            self._fail(failure.error, out, entry, place)

    def _place(
        self,
        value: Any,
        shape: Shape,
        place: Place,
        details: list[FieldDetails],
        following: dict[tuple[str, int, bool], _Group],
    ) -> None:
        """Put ``value`` at ``place``: serialised, as a list, or as an object of the next
        level. A failure of the value itself raises; one of a list item is that item's."""
        if value is None:
            if shape.non_null:
                raise _FieldError(
                    TypeError(f"Cannot return null for non-nullable field at {as_list(place)}.")
                )
            place[0][place[1]] = None
        elif shape.serialize is not None:
            try:
                place[0][place[1]] = shape.serialize(value)
            except Exception as error:
                raise _FieldError(error) from error
        elif shape.item is not None:
            self._place_list(value, shape.item, place, details, following)
        else:
            # Filled by the next level, which makes the object's dict.
            place[0][place[1]] = None
            group = self._group_of(value, shape, details, following)
            group.values.append(value)
            group.places.append(place)

    def _fields_of(self, object_type: GraphQLObjectType, cls: type[Any]) -> RecordFields | None:
        """How a value of class ``cls`` is read as ``object_type``: through the type's record
        fields if it is the type's record; None for Strawberry's objects."""
        fields = self.planner.record_fields.get(object_type.name)
        return fields if fields is not None and cls is fields.record else None

    def _group_of(
        self,
        value: Any,
        shape: Shape,
        details: list[FieldDetails],
        following: dict[tuple[str, int, bool], _Group],
    ) -> _Group:
        """The next level's group of an object: by its type, its selection, and whether it
        is a record."""
        concrete = shape.object_type
        fields: RecordFields | None
        if concrete is not None:
            fields = self._fields_of(concrete, value.__class__)
        else:
            record_type = self.planner.record_types.get(value.__class__)
            if record_type is not None:
                concrete, fields = record_type
            else:
                concrete, fields = self._concrete_type(value), None
        group_key = (concrete.name, id(details), fields is not None)
        group = following.get(group_key)
        if group is None:
            group = following[group_key] = _Group(concrete, details, fields)
        return group

    def _place_list(
        self,
        values: Sequence[Any],
        item: Shape,
        place: Place,
        details: list[FieldDetails],
        following: dict[tuple[str, int, bool], _Group],
        *,
        groups: dict[type[Any], _Group] | None = None,
    ) -> None:
        """A list's items at their places; ``groups``, the next level's group of each class
        of object met so far in the lists of one field, spares finding it per item."""
        objects = item.serialize is None and item.item is None
        # A field whose lists already went to a group (objects not of leaves alone) spares
        # its later lists the question.
        if objects and not groups:
            projected = self._projected_whole(values, item, details)
            if projected is not None:
                place[0][place[1]] = projected
                return
        placed: list[Any] = [None] * len(values)
        place[0][place[1]] = placed
        nullable = not item.non_null
        if groups is None:
            groups = {}
        for index, value in enumerate(values):
            item_place = (placed, index, nullable, place)
            group = groups.get(value.__class__)
            if group is not None:
                group.values.append(value)
                group.places.append(item_place)
                continue
            try:
                self._place(value, item, item_place, details, following)
            except _FieldError as failure:
                if nullable or self._alive(place):
                    nodes = [detail.node for detail in details]
                    self.errors.append(located_error(failure.error, nodes, as_list(item_place)))
                if nullable:
                    placed[index] = None
                else:
                    self._null_above(place)
                continue
            if objects and value is not None:
                groups[value.__class__] = self._group_of(value, item, details, following)

    def _complete_many(
        self,
        values: list[Any],
        targets: list[tuple[dict[str, Any], Place]],
        entry: Entry,
        following: dict[tuple[str, int, bool], _Group],
    ) -> None:
        """``_complete`` of one field's values in many objects (``targets``: each one's dict
        and place). Objects and lists of objects, the bulk of a response, go straight to
        their group in the next level."""
        key, plan, details = entry
        assert plan is not None
        shape = plan.shape
        item = shape.item
        listed = item is not None and item.serialize is None and item.item is None
        if shape.serialize is not None or (item is not None and not listed):
            for value, (out, place) in zip(values, targets, strict=True):
                self._complete(value, out, entry, place, following)
            return
        if not listed:
            projected = self._projected_whole(values, shape, details)
            if projected is not None:
                for projected_out, (out, _) in zip(projected, targets, strict=True):
                    out[key] = projected_out
                return
        nullable = not shape.non_null
        groups: dict[type[Any], _Group] = {}
        for value, (out, place) in zip(values, targets, strict=True):
            if value is None:
                self._complete(None, out, entry, place, following)
            elif listed:
                assert item is not None
                try:
                    self._place_list(
                        value, item, (out, key, nullable, place), details, following, groups=groups
                    )
                except _FieldError as failure:
                    self._fail(failure.error, out, entry, place)
            else:
                group = groups.get(value.__class__)
                if group is None:
                    try:
                        group = self._group_of(value, shape, details, following)
                    except _FieldError as failure:
                        self._fail(failure.error, out, entry, place)
                        continue
                    groups[value.__class__] = group
                # Filled by the next level, which makes the object's dict.
                out[key] = None
                group.values.append(value)
                group.places.append((out, key, nullable, place))

    def _concrete_type(self, value: Any) -> GraphQLObjectType:
        """The object type of a value of an interface or union: a Node is one of the
        catalogue's types, none of them generic."""
        definition = getattr(type(value), "__strawberry_definition__", None)
        found = self.schema.get_type(definition.name) if definition is not None else None
        if not isinstance(found, GraphQLObjectType):
            raise _FieldError(TypeError(f"no object type for {type(value).__name__}"))
        return found

    def _alive(self, place: Place | None) -> bool:
        dead = self._dead
        if not dead:
            return True
        while place is not None:
            if id(place) in dead:
                return False
            place = place[3]
        return True

    def _null_above(self, place: Place | None) -> None:
        """A non-null value failed in the object at ``place``: null the nearest nullable
        place."""
        while place is not None:
            self._dead[id(place)] = place
            if place[2]:
                place[0][place[1]] = None
                return
            place = place[3]


def record_fields_of(graphql_type: GraphQLObjectType) -> RecordFields | None:
    """How the type's fields are read off records, where its Strawberry type declares it."""
    definition = (graphql_type.extensions or {}).get("strawberry-definition")
    fields = getattr(getattr(definition, "origin", None), "record_fields", None)
    return fields if isinstance(fields, RecordFields) else None


def _value_of(entry: Entry) -> Callable[[Any], Any]:
    """What makes a relation's value of what its source fetched: records where the relation
    gives them, projected with no object built; its objects otherwise."""
    plan = entry[1]
    assert plan is not None
    relation = plan.relation
    return relation.build if relation.records is None else relation.records  # type: ignore[no-any-return]


def _reader(plan: FieldPlan | None, fields: RecordFields | None) -> Callable[[Any], Any] | None:
    """What reads a field's value (a relation's: its key) off an object or its record."""
    if plan is None or plan.kind is Kind.RESOLVER:
        return None
    name = plan.relation.key if plan.kind is Kind.RELATION else plan.python_name
    return attrgetter(name) if fields is None else fields.reader(name)


class _FieldError(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _is_awaitable(value: Any) -> TypeGuard[Awaitable[Any]]:
    return isawaitable(value)


async def _settled(awaitables: list[Awaitable[Any]]) -> list[Any]:
    """Each awaitable's value or exception, all awaited at once. A level often waits for
    one thing alone (a root list, a count, the next relation down): that one is awaited
    as it is, with no task around it."""
    if len(awaitables) != 1:
        return list(await asyncio.gather(*awaitables, return_exceptions=True))
    try:
        return [await awaitables[0]]
    except Exception as error:  # it becomes the fields' error, as gather would return it
        return [error]


async def _gather(values: Sequence[Awaitable[Any]]) -> list[Any]:
    return list(await asyncio.gather(*values))


def _ignore(_: Sequence[Any]) -> None:
    """Nothing to track: every awaitable of a level is awaited before the next."""
