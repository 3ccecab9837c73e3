"""Documents parsed, validated and measured once, and checked before every operation runs.

``OperationCache.prepare`` turns a document's text into a ``PreparedDocument`` (its syntax
tree, or the errors that refuse it, and an upper bound of its cost) and keeps it in a
bounded LRU cache keyed by the text, so a repeated document costs a dictionary lookup.
``PreparedDocument.check`` does what depends on the request: picking the operation and
checking the variables (the cost they give, text a store cannot hold).

The ``OperationRules`` extension applies both on every transport (HTTP, both WebSocket
protocols), instead of Strawberry's own parsing and validation, and opens the operation's
scope (loaders, round trips, deadline).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Source,
    StringValueNode,
    TokenKind,
    parse,
    print_ast,
    specified_rules,
    validate,
    visit,
)
from graphql.language import Lexer, Visitor
from graphql.validation import MaxIntrospectionDepthRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from core import telemetry
from core.context import Context
from core.errors import request_error
from gateway.limits import Limits, measure_cost, measure_shape, too_complex
from gateway.validation import as_one_rule

MAX_CACHED_DOCUMENTS = 2000
# Costs kept per document, one per distinct set of variables.
MAX_COSTS_KEPT = 32
# Validation stops there: a document built to be wrong in ten thousand places is refused
# as fast as one wrong in a hundred.
MAX_VALIDATION_ERRORS = 50
# The specification's rules, Strawberry's own for its input types, and a bound on how deep
# introspection may nest (the one unbounded cycle in every schema).
VALIDATION_RULES = (
    *specified_rules,
    MaybeNullValidationRule,
    OneOfInputValidationRule,
    MaxIntrospectionDepthRule,
)
# What validate() is given: the rules as one visitor (gateway/validation.py).
RULES_AS_ONE = (as_one_rule(VALIDATION_RULES),)


@dataclass(frozen=True)
class PreparedDocument:
    document: DocumentNode | None
    errors: tuple[GraphQLError, ...]
    # The cost of its costliest operation whatever the variables; 0 for a refused document.
    cost_bound: int
    schema: GraphQLSchema
    limits: Limits
    # The document printed in one canonical spelling: two spellings of one document (its
    # spaces, its comments) share a cached response.
    normalized: str = ""
    _costs: dict[tuple[str | None, bytes], int] = field(
        default_factory=dict, compare=False, repr=False
    )

    def operation(self, name: str | None) -> OperationDefinitionNode | GraphQLError:
        """The operation a request runs, as the GraphQL spec picks it."""
        assert self.document is not None
        operations = [
            definition
            for definition in self.document.definitions
            if isinstance(definition, OperationDefinitionNode)
        ]
        if name is None:
            if len(operations) == 1:
                return operations[0]
            return request_error(
                "the document holds several operations: name the one to run in operationName"
            )
        for operation in operations:
            if operation.name is not None and operation.name.value == name:
                return operation
        return request_error(f"the document has no operation named {name!r}")

    def operation_named(self, name: str | None) -> str | None:
        """The name in the document of the operation a request runs ("" for an unnamed
        one), or None when the request runs none of it."""
        if self.document is None or self.errors:
            return None
        operation = self.operation(name)
        if isinstance(operation, GraphQLError):
            return None
        return operation.name.value if operation.name else ""

    def check(
        self, operation_name: str | None, variables: Mapping[str, Any] | None
    ) -> list[GraphQLError]:
        """Why this request may not run, if anything; and its cost, when it may."""
        if self.errors:
            return list(self.errors)
        operation = self.operation(operation_name)
        if isinstance(operation, GraphQLError):
            return [operation]
        problems = [
            request_error(f"variable ${path}: {problem}")
            for path, problem in unstorable_text(variables or {}, "")
        ][:MAX_VALIDATION_ERRORS]
        if problems:
            return problems
        if self.cost_bound > self.limits.cost:
            cost = self.cost(operation_name, variables)
            if cost > self.limits.cost:
                return [too_complex("cost", cost, self.limits.cost)]
        return []

    def cost(self, operation_name: str | None, variables: Mapping[str, Any] | None) -> int:
        """The operation's cost with these variables, measured once for each distinct
        set of them (reported on every response in development)."""
        try:
            key = (operation_name, orjson.dumps(variables, option=orjson.OPT_SORT_KEYS))
        except TypeError:  # values JSON cannot hold as orjson writes them (huge integers)
            key = None
        found = self._costs.get(key) if key is not None else None
        if found is not None:
            return found
        operation = self.operation(operation_name)
        if self.document is None or isinstance(operation, GraphQLError):
            return 0
        cost = measure_cost(self.schema, self.document, operation, variables or {})
        if key is not None:
            if len(self._costs) >= MAX_COSTS_KEPT:
                self._costs.clear()
            self._costs[key] = cost
        return cost


class OperationCache:
    def __init__(
        self, schema: GraphQLSchema, limits: Limits, max_documents: int = MAX_CACHED_DOCUMENTS
    ) -> None:
        self.schema = schema
        self.limits = limits
        self._max_documents = max_documents
        self._documents: OrderedDict[str, PreparedDocument] = OrderedDict()

    def prepare(self, query: str) -> PreparedDocument:
        prepared = self._documents.get(query)
        if prepared is not None:
            self._documents.move_to_end(query)
            return prepared
        prepared = self._prepare(query)
        self._documents[query] = prepared
        if len(self._documents) > self._max_documents:
            self._documents.popitem(last=False)
        return prepared

    def _prepare(self, query: str) -> PreparedDocument:
        limits = self.limits
        size = len(query.encode("utf-8", "surrogatepass"))
        if size > limits.document_bytes:
            return self._refused(too_complex("document bytes", size, limits.document_bytes))
        try:
            with telemetry.span("parse"):
                document = parse(query, max_lexical_tokens=limits.tokens)
        except GraphQLSyntaxError as error:
            return self._refused(_over_a_limit(query, limits) or error)
        with telemetry.span("validate"):
            return self._validated(document)

    def _validated(self, document: DocumentNode) -> PreparedDocument:
        """A parsed document, refused by a limit or by the schema's rules, or measured."""
        limits = self.limits
        refusals = measure_shape(document).errors(limits)
        if refusals:
            return self._refused(*refusals)
        errors = validate(self.schema, document, RULES_AS_ONE, max_errors=MAX_VALIDATION_ERRORS)
        errors += [
            request_error(f"a string in the document {problem}")
            for problem in _unstorable_literals(document)
        ]
        if errors:
            return self._refused(*errors)
        bound = max(
            (
                measure_cost(self.schema, document, definition)
                for definition in document.definitions
                if isinstance(definition, OperationDefinitionNode)
            ),
            default=0,
        )
        return PreparedDocument(document, (), bound, self.schema, limits, print_ast(document))

    def _refused(self, *errors: GraphQLError) -> PreparedDocument:
        return PreparedDocument(None, errors, 0, self.schema, self.limits)


def _over_a_limit(query: str, limits: Limits) -> GraphQLError | None:
    """Why the parser refused a document, if a limit is the reason: too many tokens, or
    nested deeper than the parser's recursion goes."""
    tokens, depth = _count_tokens(query)
    if tokens > limits.tokens:
        return too_complex("tokens", tokens, limits.tokens)
    if depth > limits.depth:
        return too_complex("depth", depth, limits.depth)
    return None


def _count_tokens(query: str) -> tuple[int, int]:
    """How many tokens a document the parser refused has, and how deep its braces nest, for
    the error; the document's size limit, checked before, bounds the work."""
    lexer = Lexer(Source(query))
    count = depth = deepest = 0
    try:
        while (kind := lexer.advance().kind) is not TokenKind.EOF:
            count += 1
            if kind is TokenKind.BRACE_L:
                depth += 1
                deepest = max(deepest, depth)
            elif kind is TokenKind.BRACE_R:
                depth -= 1
    except GraphQLSyntaxError:
        pass
    return count, deepest


def text_problem(value: str) -> str | None:
    """Why a store cannot hold ``value`` as text, if it cannot: PostgreSQL's text has no
    NUL character, and no store takes UTF-16 halves that do not pair up."""
    if "\x00" in value:
        return "contains the NUL character (U+0000), which text cannot hold"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (it holds an unpaired surrogate)"
    return None


def unstorable_text(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON value (keys included) that no store can hold."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            yield path, problem
    elif isinstance(value, Mapping):
        for key, nested in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and (problem := text_problem(key)):
                yield where, f"has a key that {problem}"
            yield from unstorable_text(nested, where)
    elif isinstance(value, list):
        for index, nested in enumerate(value):
            yield from unstorable_text(nested, f"{path}[{index}]")


def _unstorable_literals(document: DocumentNode) -> list[str]:
    problems: list[str] = []

    class Strings(Visitor):
        def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
            problem = text_problem(node.value)
            if problem:
                problems.append(problem)

    visit(document, Strings())
    return problems[:MAX_VALIDATION_ERRORS]


def placeholder_document(operation_name: str | None) -> DocumentNode:
    """Stands in for a document that did not parse, so that Strawberry goes on to the
    validation step, where the real errors are given; it never runs."""
    return DocumentNode(
        definitions=(
            OperationDefinitionNode(
                operation=OperationType.QUERY,
                name=NameNode(value=operation_name) if operation_name else None,
                variable_definitions=(),
                directives=(),
                selection_set=SelectionSetNode(selections=()),
            ),
        )
    )


class OperationRules(SchemaExtension):
    """The cache's document instead of Strawberry's parsing and validation, the request's
    checks, and the operation's scope; and, when asked, its round trips and cost."""

    def __init__(self) -> None:
        self._prepared: PreparedDocument | None = None

    def on_operation(self) -> Iterator[None]:
        context: Context = self.execution_context.context
        context.begin_operation()
        yield

    def on_parse(self) -> Iterator[None]:
        execution = self.execution_context
        query = execution.query
        if isinstance(query, str):
            context: Context = execution.context
            self._prepared = context.operations.prepare(query)
        document = self._prepared.document if self._prepared else None
        execution.graphql_document = document or placeholder_document(
            execution.operation_name if isinstance(execution.operation_name, str) else None
        )
        yield

    def on_validate(self) -> Iterator[None]:
        execution = self.execution_context
        # Strawberry's operation_name falls back to the document's first operation; the
        # name the client gave (or its absence) is what decides which operation runs.
        operation_name = execution._provided_operation_name
        if self._prepared is None:
            execution.pre_execution_errors = [request_error("the request has no query string")]
        else:
            variables = execution.variables
            if variables is not None and not isinstance(variables, Mapping):
                errors = [request_error("variables must be a JSON object")]
            else:
                errors = self._prepared.check(operation_name, variables)
            # An empty list also tells Strawberry that validation has been done.
            execution.pre_execution_errors = errors
            if not errors:
                context: Context = execution.context
                if context.report_cost:
                    context.operation.cost = self._prepared.cost(operation_name, variables)
        yield

    def get_results(self) -> dict[str, Any]:
        if self._prepared is None:
            return {}
        context: Context = self.execution_context.context
        return operation_extensions(context, context.operations.limits, STRAWBERRY)


STRAWBERRY = "strawberry"
PLANNER = "planner"


def operation_extensions(context: Context, limits: Limits, executor: str) -> dict[str, Any]:
    """What a response's extensions say of its operation, when asked: the round trips per
    store and the executor that ran it, and its cost."""
    results: dict[str, Any] = {}
    if context.report_round_trips:
        results["roundTrips"] = context.operation.round_trips.as_dict()
        results["executor"] = executor
    if context.report_cost:
        results["cost"] = {"requested": context.operation.cost, "maximum": limits.cost}
    return results
