"""Field plans, and the projection generated for each selection.

A selection's leaves (scalars and enums read off the object, ``__typename``) are projected
by a Python function generated for that selection and compiled once: one dict display per
object, whose values are attribute reads with the built-in scalars' serialisation inlined
(a ``str`` is a String as it is; an ``int`` within 32 bits is an Int). Anything the inlined
checks do not accept goes through the type's own ``serialize``; a null in a non-null field
or a serialisation that raises marks the object as failed, and the executor projects that
object again field by field, which reports the error where it belongs. The fields a
projection cannot produce (relations, resolvers, nested objects and lists) are left as
None, in their place in the response's order, for the executor to fill.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLString,
)
from graphql.execution.collect_fields import FieldDetails

from core.sources import RecordFields

RELATION = "relation"
MAX_PROJECTIONS = 1000
INT_RANGE = "-2147483648 <= x <= 2147483647"


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
    # The scalar or enum type itself, for the projection's inlined serialisation.
    leaf_type: GraphQLScalarType | GraphQLEnumType | None = None


def shape_of(output_type: Any) -> Shape:
    non_null = isinstance(output_type, GraphQLNonNull)
    nullable = output_type.of_type if non_null else output_type
    if isinstance(nullable, GraphQLScalarType | GraphQLEnumType):
        return Shape(non_null, serialize=nullable.serialize, leaf_type=nullable)
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

    @property
    def projected(self) -> bool:
        """A scalar or an enum read off the object: the generated projection's part."""
        return self.kind is Kind.ATTRIBUTE and self.shape.serialize is not None


def plan_field(definition: GraphQLField, name: str) -> FieldPlan:
    strawberry_field = (definition.extensions or {}).get("strawberry-definition")
    python_name = getattr(strawberry_field, "python_name", name)
    relation = (getattr(strawberry_field, "metadata", None) or {}).get(RELATION)
    shape = shape_of(definition.type)
    if relation is not None:
        return FieldPlan(Kind.RELATION, definition, python_name, shape, relation)
    if getattr(strawberry_field, "base_resolver", None) is not None:
        return FieldPlan(Kind.RESOLVER, definition, python_name, shape)
    return FieldPlan(Kind.ATTRIBUTE, definition, python_name, shape)


# A field of a selection, planned: its response key, its plan (None for __typename), and
# the nodes it was selected by.
Entry = tuple[str, FieldPlan | None, list[FieldDetails]]
# The objects of a group to their dicts, and the indices of those that failed (their dicts
# are None, to be projected field by field).
Projector = Callable[[Sequence[Any]], tuple[list[Any], list[int]]]


class _NullError(Exception):
    """A null in a non-null field: the object is projected again, field by field."""


class Projections:
    """The generated projection of each (type, selection), compiled once and kept."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[Any, ...], Projector] = {}

    def projector(
        self, type_name: str, entries: list[Entry], fields: RecordFields | None
    ) -> Projector:
        """The projection of objects of ``type_name``, or of their records with
        ``fields``."""
        # Plans are made once per schema and kept, so their ids name them.
        signature = (type_name, fields is None, *((key, id(plan)) for key, plan, _ in entries))
        found = self._compiled.get(signature)
        if found is None:
            if len(self._compiled) >= MAX_PROJECTIONS:
                self._compiled.clear()
            found = self._compiled[signature] = _generate(type_name, entries, fields)
        return found


def _generate(type_name: str, entries: list[Entry], fields: RecordFields | None) -> Projector:
    namespace: dict[str, Any] = {"_NullError": _NullError}
    items: list[str] = []
    for index, (key, plan, _) in enumerate(entries):
        if plan is None:
            value = repr(type_name)
        elif plan.projected:
            read = _read(plan.python_name, fields, f"r{index}", namespace)
            value = _leaf(plan, read, f"s{index}", namespace)
        else:
            value = "None"
        items.append(f"{key!r}: {value}")
    source = "\n".join(
        [
            "def project(values):",
            "    outs = []",
            "    append = outs.append",
            "    failed = []",
            "    for index, v in enumerate(values):",
            "        try:",
            f"            append({{{', '.join(items)}}})",
            "        except Exception:",
            "            append(None)",
            "            failed.append(index)",
            "    return outs, failed",
        ]
    )
    exec(compile(source, f"<projection of {type_name}>", "exec"), namespace)  # noqa: S102
    projector: Projector = namespace["project"]
    return projector


def _read(name: str, fields: RecordFields | None, function: str, namespace: dict[str, Any]) -> str:
    """The expression that reads field ``name`` off ``v``: an object or its record."""
    source = name if fields is None else fields.fields[name]
    if isinstance(source, str):
        return f"v.{source}"
    namespace[function] = source
    return f"{function}(v)"


def _leaf(plan: FieldPlan, read: str, name: str, namespace: dict[str, Any]) -> str:
    """The expression of a leaf read by ``read``: ``x`` is the raw value."""
    shape = plan.shape
    assert shape.serialize is not None
    serialize = shape.serialize
    if shape.non_null:
        namespace[name] = _strict(serialize)
    else:
        namespace[name] = serialize
    inlined = _inlined(shape.leaf_type, name, namespace)
    assigned = f"(x := {read})"
    if shape.non_null:
        return f"({inlined.format(read=assigned)})"
    return f"(None if {assigned} is None else {inlined.format(read='x')})"


def _inlined(leaf_type: Any, name: str, namespace: dict[str, Any]) -> str:
    """The serialisation of ``{read}`` in place, where the type allows it."""
    if leaf_type is GraphQLString or leaf_type is GraphQLID:
        return f"x if {{read}}.__class__ is str else {name}(x)"
    if leaf_type is GraphQLBoolean:
        return f"x if {{read}}.__class__ is bool else {name}(x)"
    if leaf_type is GraphQLInt:
        return f"x if {{read}}.__class__ is int and {INT_RANGE} else {name}(x)"
    wrapped = getattr(leaf_type, "wrapped_cls", None)
    if isinstance(leaf_type, GraphQLEnumType) and wrapped is not None:
        names = namespace[f"{name}_names"] = _enum_names(leaf_type, wrapped)
        namespace[f"{name}_class"] = wrapped
        if names:
            # By the member's value: a member's own hash is a Python-level call.
            return f"{name}_names[x._value_] if {{read}}.__class__ is {name}_class else {name}(x)"
    return f"{name}({{read}})"


def _enum_names(enum_type: GraphQLEnumType, wrapped: type[Enum]) -> dict[Any, str]:
    """What the enum's serialize answers for each of its members, by the member's value:
    the first name whose value is the member's value. None where a value is not hashable
    (the enum's serialize answers for those)."""
    names: dict[Any, str] = {}
    for member in wrapped:
        for name, value in enum_type.values.items():
            if member.value == value.value:
                try:
                    names[member.value] = name
                except TypeError:
                    return {}
                break
    return names


def _strict(serialize: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def serialize_non_null(value: Any) -> Any:
        if value is None:
            raise _NullError
        return serialize(value)

    return serialize_non_null
