"""How much an operation may ask for, measured before it runs.

Two passes, both over the syntax tree and both cheap next to executing:

- the *shape* (depth, aliases, root fields, directives per field) needs no schema and runs
  before validation, so that a document built to make validation itself slow (thousands of
  aliases for the overlapping-fields rule, say) is refused first;
- the *cost* needs the schema and a valid document. Every field costs 1, a field that needs
  a store call costs ``STORE_FIELD_COST``, and a list multiplies what is selected under it
  by its size: its ``first``/``last``/``limit`` argument (or that argument's default, or the
  default page size), the number of ``ids`` it is given, or ``UNBOUNDED_LIST_SIZE`` for a
  list no argument bounds. A connection's page size applies to its ``edges``.

Introspection (``__schema``, ``__type``) counts as one field: graphql-core's
introspection-depth rule bounds it instead, and GraphiQL's own introspection query is
deeper than any sensible limit on the catalogue.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
)

from core.errors import ErrorCode, GatewayError
from core.settings import Settings
from resolvers.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

STORE_FIELD_COST = 5
UNBOUNDED_LIST_SIZE = 10
SIZE_ARGUMENTS = ("first", "last", "limit")
INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})


@dataclass(frozen=True)
class Limits:
    document_bytes: int = 32 * 1024
    tokens: int = 3000
    depth: int = 12
    aliases: int = 30
    root_fields: int = 20
    directives_per_field: int = 5
    cost: int = 500_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            document_bytes=settings.max_document_bytes,
            tokens=settings.max_tokens,
            depth=settings.max_depth,
            aliases=settings.max_aliases,
            root_fields=settings.max_root_fields,
            directives_per_field=settings.max_directives_per_field,
            cost=settings.max_cost,
        )


def too_complex(limit: str, measured: int, maximum: int) -> GraphQLError:
    """The error every limit answers with: what was measured, and the most allowed."""
    return GraphQLError(
        f"the operation's {limit} is {measured}, over the limit of {maximum}",
        original_error=GatewayError(
            "", ErrorCode.QUERY_TOO_COMPLEX, limit=limit, measured=measured, maximum=maximum
        ),
    )


@dataclass(frozen=True)
class Shape:
    depth: int
    aliases: int
    root_fields: int
    directives_per_field: int

    def errors(self, limits: Limits) -> list[GraphQLError]:
        checks = (
            ("depth", self.depth, limits.depth),
            ("aliases", self.aliases, limits.aliases),
            ("root fields", self.root_fields, limits.root_fields),
            ("directives per field", self.directives_per_field, limits.directives_per_field),
        )
        return [
            too_complex(limit, measured, maximum)
            for limit, measured, maximum in checks
            if measured > maximum
        ]


def measure_shape(document: DocumentNode) -> Shape:
    """The shape of a parsed document, valid or not: fragments may be unknown or cyclic."""
    fragments = _fragments(document)
    aliases = 0
    directives = 0
    for node in _all_selections(document):
        directives = max(directives, len(node.directives or ()))
        if isinstance(node, FieldNode) and node.alias is not None:
            aliases += 1
    walker = _ShapeWalker(fragments)
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    return Shape(
        depth=max((walker.depth(op.selection_set) for op in operations), default=0),
        aliases=aliases,
        root_fields=max((walker.root_fields(op.selection_set) for op in operations), default=0),
        directives_per_field=directives,
    )


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }


def _all_selections(document: DocumentNode) -> Iterator[Any]:
    """Every selection written in the document, each once (fragments are not expanded)."""
    pending: list[SelectionSetNode] = [
        definition.selection_set
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode)
    ]
    while pending:
        selection_set = pending.pop()
        for selection in selection_set.selections:
            yield selection
            nested = getattr(selection, "selection_set", None)
            if nested is not None:
                pending.append(nested)


class _ShapeWalker:
    """Depth and root fields through fragments, each fragment measured once; a fragment
    that spreads itself counts as empty (validation refuses it anyway)."""

    def __init__(self, fragments: Mapping[str, FragmentDefinitionNode]) -> None:
        self._fragments = fragments
        self._depths: dict[str, int] = {}
        self._widths: dict[str, int] = {}

    def depth(self, selection_set: SelectionSetNode | None) -> int:
        deepest = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                if selection.name.value in INTROSPECTION_ROOTS:
                    below = 0
                else:
                    below = self.depth(selection.selection_set)
                deepest = max(deepest, 1 + below)
            elif isinstance(selection, InlineFragmentNode):
                deepest = max(deepest, self.depth(selection.selection_set))
            elif isinstance(selection, FragmentSpreadNode):
                deepest = max(deepest, self._memo(selection.name.value, self._depths, self.depth))
        return deepest

    def root_fields(self, selection_set: SelectionSetNode | None) -> int:
        count = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                count += 1
            elif isinstance(selection, InlineFragmentNode):
                count += self.root_fields(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                count += self._memo(selection.name.value, self._widths, self.root_fields)
        return count

    def _memo(self, name: str, memo: dict[str, int], measure: Any) -> int:
        if name in memo:
            return memo[name]
        fragment = self._fragments.get(name)
        memo[name] = 0  # while it is being measured: a cycle back to it adds nothing
        memo[name] = 0 if fragment is None else measure(fragment.selection_set)
        return memo[name]


def measure_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None = None,
) -> int:
    """The cost of a validated operation. Without ``variables``, a size given by a
    variable counts as the largest page: an upper bound that holds for any variables."""
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    return _CostWalker(schema, _fragments(document), variables).cost(
        operation.selection_set, root, None
    )


class _CostWalker:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any] | None,
    ) -> None:
        self._schema = schema
        self._fragments = fragments
        self._variables = variables

    def cost(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType, page_size: int | None
    ) -> int:
        """What ``selection_set`` costs on one ``parent``; ``page_size`` is the size a
        connection field gave, which its list of edges takes."""
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self._field(selection, parent, page_size)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                on = self._schema.get_type(condition.name.value) if condition else parent
                total += self.cost(selection.selection_set, on or parent, page_size)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self._fragments[selection.name.value]
                on = self._schema.get_type(fragment.type_condition.name.value)
                total += self.cost(fragment.selection_set, on or parent, page_size)
        return total

    def _field(self, node: FieldNode, parent: GraphQLNamedType, page_size: int | None) -> int:
        name = node.name.value
        if name.startswith("__") or not isinstance(
            parent, GraphQLObjectType | GraphQLInterfaceType
        ):
            return 1
        definition = parent.fields[name]
        weight = STORE_FIELD_COST if _needs_store(definition) else 1
        if node.selection_set is None:
            return weight
        own_size = self._size(node, definition)
        if isinstance(get_nullable_type(definition.type), GraphQLList):
            count = own_size or page_size or UNBOUNDED_LIST_SIZE
            return weight + count * self.cost(node.selection_set, _named(definition), None)
        return weight + self.cost(node.selection_set, _named(definition), own_size)

    def _size(self, node: FieldNode, definition: GraphQLField) -> int | None:
        given = {argument.name.value: argument.value for argument in node.arguments or ()}
        sized = [name for name in SIZE_ARGUMENTS if name in definition.args]
        for name in sized:
            if name in given:
                return self._integer(given[name])
        if sized:
            default = definition.args[sized[-1]].default_value
            return default if isinstance(default, int) else DEFAULT_PAGE_SIZE
        ids = given.get("ids")
        if isinstance(ids, ListValueNode):
            return len(ids.values)
        if isinstance(ids, VariableNode):
            value = self._variable(ids)
            return len(value) if isinstance(value, list) else MAX_PAGE_SIZE
        return None

    def _integer(self, value: Any) -> int:
        if isinstance(value, IntValueNode):
            return max(0, min(int(value.value), MAX_PAGE_SIZE))
        if isinstance(value, VariableNode):
            given = self._variable(value)
            if isinstance(given, int) and not isinstance(given, bool):
                return max(0, min(given, MAX_PAGE_SIZE))
            return MAX_PAGE_SIZE if self._variables is None else DEFAULT_PAGE_SIZE
        return DEFAULT_PAGE_SIZE  # null: the field's default page

    def _variable(self, node: VariableNode) -> Any:
        return None if self._variables is None else self._variables.get(node.name.value)


def _named(definition: GraphQLField) -> GraphQLNamedType:
    named: GraphQLNamedType = get_named_type(definition.type)
    return named


def _needs_store(definition: GraphQLField) -> bool:
    """Fields with an async resolver are the ones that load from a store; plain attributes
    and computed fields are synchronous."""
    strawberry_field = (definition.extensions or {}).get("strawberry-definition")
    resolver = getattr(strawberry_field, "base_resolver", None)
    wrapped = getattr(resolver, "wrapped_func", None)
    return wrapped is not None and inspect.iscoroutinefunction(wrapped)
