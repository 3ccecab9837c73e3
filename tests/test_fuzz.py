"""Generated and hostile GraphQL requests over HTTP and WebSocket, against a gateway with a
database of its own (mutations write): every answer must be a coded GraphQL response that
gives nothing of the server away, and the gateway must still answer afterwards.

Violations are collected, not raised at the first one, so that one run shows every kind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import random
import re
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import graphql
import httpx
import pytest
from hypothesis import strategies as st
from hypothesis_graphql import Mode, mutations, nodes, queries
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from core.connections import Connections
from core.settings import Settings
from datasources.models import Role
from gateway.app import create_app
from gateway.schema import catalogue_schema
from gateway.seed import seed
from tests.clients import issue_key, serving
from tests.generated import CUSTOM_SCALARS, draw
from tests.given_stores import stores_given

CODES = frozenset(
    {
        "BAD_USER_INPUT",
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "NOT_FOUND",
        "RATE_LIMITED",
        "QUERY_TOO_COMPLEX",
        "PERSISTED_QUERY_NOT_FOUND",
        "SERVICE_UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "INTERNAL_SERVER_ERROR",
    }
)
GRAPHQL_CONTENT_TYPES = ("application/json", "application/graphql-response+json")
# Keep-alive messages either protocol may send at any time: no answer to anything.
KEEP_ALIVE = ("ping", "pong", "ka")
# graphql-transport-ws messages after which an operation gets nothing more.
OPERATION_ENDS = ("error", "complete")
# What a response must never show: a traceback, SQL, a source path, driver text.
LEAKS = (
    "Traceback",
    "SELECT ",
    "INSERT ",
    "asyncpg",
    "sqlalchemy",
    "/site-packages/",
    '.py"',
    'File "',
    "pymongo",
    "redis.exceptions",
)
INJECTIONS = (
    "'; DROP TABLE reports; --",
    '" OR "1"="1',
    '{"$gt": ""}',
    '{"$where": "sleep(1000)"}',
    "\u0000",
    "before\u0000after",
    "%00%27%22",
    "${7*7}{{7*7}}",
    "../../../../etc/passwd",
    "\u202e\ufeff\u200b" + "\U0001f600" * 500,
    # Astral-plane letters: four UTF-8 bytes and two UTF-16 units each.
    "\U0001d518\U0001d52b\U0001d526" * 1_000,
)
# Enough generated documents to cover the schema's arguments in many combinations, few
# enough that generation and sending stay within a few tens of seconds on two cores.
VALID_QUERIES = 420
VALID_MUTATIONS = 180
NEGATIVE_DOCUMENTS = 260
DERIVED_PER_VALID = 2
WEBSOCKET_BATCH = 40
ANSWER_TIMEOUT = 30.0
MAX_GET_QUERY = 6_000
EXAMPLES_PER_KIND = 4
FUZZ_SEED = 20_240_611
# The generated documents are sent by several tests, each a share of them: a parallel run
# spreads the shares over its processes instead of waiting on one long test.
GENERATED_SHARDS = 4


@dataclass(frozen=True)
class Probe:
    """One GraphQL request, independent of the transport that carries it."""

    label: str
    document: object
    # A schema-valid request (or one only a client could get wrong): an internal error
    # answering it is a bug of the gateway, not a consequence of bad input.
    strict: bool
    variables: object = None
    operation_name: object = None

    def payload(self) -> dict[str, object]:
        body: dict[str, object] = {"query": self.document}
        if self.variables is not None:
            body["variables"] = self.variables
        if self.operation_name is not None:
            body["operationName"] = self.operation_name
        return body

    @property
    def is_mutation(self) -> bool:
        return isinstance(self.document, str) and self.document.lstrip().startswith("mutation")


@dataclass(frozen=True)
class HttpProbe:
    """A request at the HTTP level, for what a GraphQL payload cannot express."""

    label: str
    method: str
    content: bytes | None = None
    _: dataclasses.KW_ONLY
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    strict: bool = True


@dataclass(frozen=True)
class Sent:
    """A request as it went out: the context of whatever its answer shows."""

    channel: str
    label: str
    strict: bool
    shown: str
    # Every string it carried, decoded: what the answer may echo without leaking it.
    text: str

    @classmethod
    def of(cls, probe: Probe, channel: str) -> Sent:
        payload = probe.payload()
        shown = json.dumps(payload)
        return cls(channel, probe.label, probe.strict, shown, "\n".join(_strings(payload)))


@dataclass(frozen=True)
class Violation:
    kind: str
    # What tells apart violations of one kind: an error's message, a leaked marker.
    detail: str
    channel: str
    label: str
    request: str
    response: str


@dataclass
class Findings:
    violations: list[Violation] = field(default_factory=list)
    answered: int = 0

    def add(self, kind: str, sent: Sent, response: str, detail: str = "") -> None:
        # The same fault seen over HTTP and over a WebSocket is usually two fixes.
        family = sent.channel.split()[0].replace("POST", "HTTP").replace("GET", "HTTP")
        self.violations.append(
            Violation(
                f"{kind} [{family}]",
                detail,
                sent.channel,
                sent.label,
                _excerpt(sent.shown, 240),
                _excerpt(response, 400),
            )
        )

    def summary(self) -> str:
        by_kind: dict[str, list[Violation]] = defaultdict(list)
        for violation in self.violations:
            by_kind[violation.kind].append(violation)
        lines = [
            f"{len(self.violations)} violations of {len(by_kind)} kinds in {self.answered} answers:"
        ]
        for kind, found in sorted(by_kind.items(), key=lambda item: -len(item[1])):
            labels = sorted({v.label for v in found})
            lines.append(f"\n[{len(found)}x] {kind}\n  probes: {_excerpt(', '.join(labels), 400)}")
            details = Counter(v.detail for v in found if v.detail).most_common(12)
            lines.extend(f"  {count:>5}x {_excerpt(detail, 110)}" for detail, count in details)
            lines.extend(
                f"  - {v.channel} · {v.label}\n      request:  {v.request}\n"
                f"      response: {v.response}"
                for v in _varied(found)
            )
        return "\n".join(lines)


def _varied(found: list[Violation]) -> list[Violation]:
    """Examples of different details and probes first, then the rest in order."""
    chosen: list[Violation] = []
    for key in (lambda v: v.detail, lambda v: v.label, id):
        seen = {key(v) for v in chosen}
        for violation in found:
            if key(violation) not in seen and violation not in chosen:
                seen.add(key(violation))
                chosen.append(violation)
    return chosen[:EXAMPLES_PER_KIND]


def _excerpt(text: str, limit: int) -> str:
    flat = "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text[: limit * 2]
    )
    return flat if len(text) <= limit else f"{flat[:limit]}… ({len(text)} chars)"


def logged_causes(records: list[logging.LogRecord]) -> str:
    """The exceptions the server logged while answering: the causes of masked errors."""
    causes = Counter(
        re.sub(r"\b\d+\b", "…", f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
        for record in records
        if record.exc_info and record.exc_info[1] is not None
    )
    lines = [f"  {count:>5}x {_excerpt(cause, 160)}" for cause, count in causes.most_common(15)]
    return "\n\nExceptions the server logged:\n" + "\n".join(lines) if lines else ""


# Generation -------------------------------------------------------------------------------


@functools.cache
def generated_probes() -> tuple[Probe, ...]:
    sdl = catalogue_schema().as_str()
    schema = graphql.build_schema(sdl)
    # Queries one root field at a time are several times cheaper to generate than ones over
    # the whole root type, and reach every field's arguments as often.
    query_roots = sorted(schema.query_type.fields) if schema.query_type else []
    per_field = st.one_of(
        [queries(sdl, fields=[name], custom_scalars=CUSTOM_SCALARS) for name in query_roots]
    )
    kept = {"schema": sdl, "caller": __file__}
    valid = draw(
        per_field, VALID_QUERIES - VALID_QUERIES // 6, recipe="queries by root field", **kept
    )
    valid += draw(
        queries(sdl, custom_scalars=CUSTOM_SCALARS),
        VALID_QUERIES // 6,
        recipe="queries",
        **kept,
    )
    valid += draw(
        mutations(sdl, custom_scalars=CUSTOM_SCALARS),
        VALID_MUTATIONS,
        recipe="mutations",
        **kept,
    )
    negative = draw(
        queries(sdl, custom_scalars=CUSTOM_SCALARS, mode=Mode.NEGATIVE)
        | mutations(sdl, custom_scalars=CUSTOM_SCALARS, mode=Mode.NEGATIVE),
        NEGATIVE_DOCUMENTS,
        recipe="schema violations",
        **kept,
    )
    rng = random.Random(FUZZ_SEED)
    probes = [Probe("valid", document, strict=True) for document in valid]
    probes += [Probe("schema violation", document, strict=False) for document in negative]
    for document in valid:
        for _ in range(DERIVED_PER_VALID):
            probes.append(_derive(schema, document, rng))
    rng.shuffle(probes)
    return tuple(probes)


def _derive(schema: graphql.GraphQLSchema, document: str, rng: random.Random) -> Probe:
    """A variant of a valid document: broken in one way, or valid with hostile values."""
    ast = graphql.parse(document)
    choice = rng.randrange(6)
    if choice == 0:
        return Probe("truncated", document[: rng.randrange(1, len(document))], strict=False)
    if choice == 1:
        return Probe("renamed field", graphql.print_ast(_rename_field(ast, rng)), strict=False)
    if choice == 2:
        retyped = graphql.print_ast(_retype_value(ast, rng))
        return Probe("wrong argument type", retyped, strict=False)
    if choice == 3:
        return Probe("injected strings", graphql.print_ast(_inject(ast, rng)), strict=True)
    hoisted, names = _hoist_arguments(schema, ast)
    variables: object = {name: _random_json(rng, 3) for name in names}
    if choice == 5:
        # Variables that are not an object, or that name nothing the operation declares.
        variables = rng.choice([_random_json(rng, 2), {"undeclared": _random_json(rng, 2)}])
    return Probe("random variables", graphql.print_ast(hoisted), strict=True, variables=variables)


class _NthNode(graphql.Visitor):
    """Replaces the ``target``-th node the subclass chooses to count."""

    def __init__(self, target: int) -> None:
        super().__init__()
        self.target = target
        self.seen = 0

    def hit(self) -> bool:
        self.seen += 1
        return self.seen - 1 == self.target


def _count(ast: graphql.DocumentNode, kinds: tuple[type[graphql.Node], ...]) -> int:
    counted = 0

    class Tally(graphql.Visitor):
        def enter(self, node: graphql.Node, *_: object) -> None:
            nonlocal counted
            counted += isinstance(node, kinds)

    graphql.visit(ast, Tally())
    return counted


def _rename_field(ast: graphql.DocumentNode, rng: random.Random) -> graphql.DocumentNode:
    fields = _count(ast, (graphql.FieldNode,))

    class Rename(_NthNode):
        def enter_field(self, node: graphql.FieldNode, *_: object) -> graphql.FieldNode | None:
            if not self.hit():
                return None
            name = node.name.value
            renamed = rng.choice([name + "x", name.upper(), name[:-1] or "x", "__" + name])
            return dataclasses.replace(node, name=graphql.NameNode(value=renamed))

    result: graphql.DocumentNode = graphql.visit(ast, Rename(rng.randrange(fields)))
    return result


_VALUE_KINDS = (
    graphql.StringValueNode,
    graphql.IntValueNode,
    graphql.FloatValueNode,
    graphql.BooleanValueNode,
    graphql.EnumValueNode,
    graphql.ListValueNode,
    graphql.ObjectValueNode,
    graphql.NullValueNode,
)


def _retype_value(ast: graphql.DocumentNode, rng: random.Random) -> graphql.DocumentNode:
    values = _count(ast, _VALUE_KINDS)
    if values == 0:
        # Nothing to retype: give the first field an argument it does not have.
        class Extra(_NthNode):
            def enter_field(self, node: graphql.FieldNode, *_: object) -> graphql.FieldNode | None:
                if not self.hit():
                    return None
                argument = graphql.ArgumentNode(
                    name=graphql.NameNode(value="bogus"), value=nodes.Int(1)
                )
                return dataclasses.replace(node, arguments=(*(node.arguments or ()), argument))

        extended: graphql.DocumentNode = graphql.visit(ast, Extra(0))
        return extended
    replacements: list[graphql.ValueNode] = [
        nodes.Int(7),
        nodes.String("7"),
        graphql.FloatValueNode(value="1e309"),
        nodes.Int(2**70),
        nodes.Boolean(value=True),
        nodes.Enum("NOT_A_VALUE"),
        nodes.List([nodes.Int(1), nodes.String("x")]),
        nodes.Object([]),
        nodes.Null,
    ]

    class Retype(_NthNode):
        def enter(self, node: graphql.Node, *_: object) -> graphql.Node | None:
            if not isinstance(node, _VALUE_KINDS) or not self.hit():
                return None
            same = type(node)
            return rng.choice([r for r in replacements if type(r) is not same])

    result: graphql.DocumentNode = graphql.visit(ast, Retype(rng.randrange(values)))
    return result


def _inject(ast: graphql.DocumentNode, rng: random.Random) -> graphql.DocumentNode:
    class Inject(graphql.Visitor):
        def enter_string_value(
            self, node: graphql.StringValueNode, *_: object
        ) -> graphql.StringValueNode:
            return nodes.String(rng.choice(INJECTIONS))

    result: graphql.DocumentNode = graphql.visit(ast, Inject())
    return result


def _hoist_arguments(
    schema: graphql.GraphQLSchema, ast: graphql.DocumentNode
) -> tuple[graphql.DocumentNode, list[str]]:
    """The document with every argument's value replaced by a variable of its declared type."""
    names: list[str] = []
    definitions: list[graphql.VariableDefinitionNode] = []
    type_info = graphql.TypeInfo(schema)

    class Hoist(graphql.Visitor):
        def enter_argument(self, node: graphql.ArgumentNode, *_: object) -> graphql.ArgumentNode:
            argument = type_info.get_argument()
            assert argument is not None
            name = f"v{len(names)}"
            names.append(name)
            variable = graphql.VariableNode(name=graphql.NameNode(value=name))
            definitions.append(
                graphql.VariableDefinitionNode(
                    variable=variable, type=graphql.parse_type(str(argument.type))
                )
            )
            return dataclasses.replace(node, value=variable)

        def leave_operation_definition(
            self, node: graphql.OperationDefinitionNode, *_: object
        ) -> graphql.OperationDefinitionNode:
            return dataclasses.replace(node, variable_definitions=tuple(definitions))

    hoisted: graphql.DocumentNode = graphql.visit(ast, graphql.TypeInfoVisitor(type_info, Hoist()))
    return hoisted, names


def _random_json(rng: random.Random, depth: int) -> object:
    leaves: list[Callable[[], object]] = [
        lambda: rng.choice(INJECTIONS),
        lambda: rng.choice([0, -1, 1, 2**31, 2**63, -(2**64), 10**30]),
        lambda: rng.choice([0.5, -1e308, 1e-320]),
        lambda: rng.choice([True, False, None]),
        lambda: rng.choice(["", "UmVwb3J0OjE=", "Report:1", "1", "DRAFT", "2024-02-30"]),
    ]
    if depth > 0 and rng.random() < 0.3:
        if rng.random() < 0.5:
            return [_random_json(rng, depth - 1) for _ in range(rng.randrange(4))]
        return {f"k{i}": _random_json(rng, depth - 1) for i in range(rng.randrange(4))}
    return rng.choice(leaves)()


# Hostile requests -------------------------------------------------------------------------

DEEP_REPORTS = (
    "{ reports(first:100) { edges { node { title authors { author { name reports(first:100) "
    "{ edges { node { title authors { author { name reports(first:100) { edges { node { title "
    "} } } } } } } } } } } } } }"
)


def _nested_reports(levels: int) -> str:
    inner = "title"
    for _ in range(levels):
        inner = f"title authors {{ author {{ reports {{ edges {{ node {{ {inner} }} }} }} }} }}"
    return f"{{ reports {{ edges {{ node {{ {inner} }} }} }} }}"


def hostile_probes(report_id: str) -> list[Probe]:
    search = "query($s: String) { reports(filter: {search: $s}) { totalCount } }"
    # Every string argument of these takes the injection, as a well-formed literal so that
    # it reaches the resolvers; REPORT is a report that exists, so updates get that far.
    string_arguments = [
        "query { reports(filter: {search: %s}) { totalCount } }",
        "query { reports(after: %s) { totalCount } }",
        "query { report(id: %s) { title } }",
        "query { node(id: %s) { id } }",
        "query { nodes(ids: [%s]) { id } }",
        "query { reports(filter: {tags: [%s], authorIds: [%s]}) { totalCount } }",
        "mutation { createReport(input: {title: %s, typeId: %s, authors: []},"
        " idempotencyKey: %s) { __typename } }",
        'mutation { updateReport(id: "REPORT", input: {title: %s, abstract: %s}) { __typename } }',
        "mutation { createAuthor(input: {name: %s, email: %s, orcid: %s}) { __typename } }",
        "mutation { createInstitution(input: {name: %s, website: %s}) { __typename } }",
        "mutation { createTechnology(input: {name: %s}) { __typename } }",
        'mutation { upsertReportDocument(reportId: "REPORT", document: {tags: [%s], '
        "sections: [{heading: %s, body: %s}]}) { __typename } }",
    ]
    probes = [
        Probe("deep nesting (40 levels)", _nested_reports(40), strict=True),
        Probe("deep nesting (parser recursion)", "{ a " * 3_000 + "}" * 3_000, strict=True),
        Probe(
            "5,000 aliases",
            "{ " + " ".join(f"a{i}: service {{ name }}" for i in range(5_000)) + " }",
            strict=True,
        ),
        Probe(
            "2 MB string argument",
            '{ reports(filter: {search: "' + "a" * (2 * 1024 * 1024) + '"}) { totalCount } }',
            strict=True,
        ),
        Probe(
            "fragment cycle",
            "{ ...A } fragment A on Query { ...B } fragment B on Query { service { ...C } } "
            "fragment C on Service { name ...C }",
            strict=True,
        ),
        Probe(
            "10,000 directives",
            "{ __typename" + " @include(if: true)" * 10_000 + " }",
            strict=True,
        ),
        Probe("unknown operationName", "query A { __typename }", strict=True, operation_name="B"),
        Probe(
            "several operations, no name",
            "query A { __typename } query B { service { name } }",
            strict=True,
        ),
        Probe("non-string query", 12345, strict=True),
        Probe("non-string query (object)", {"query": "{ __typename }"}, strict=True),
        Probe("null query", None, strict=True),
        Probe("non-object variables (list)", search, strict=True, variables=[1, 2]),
        Probe("non-object variables (string)", search, strict=True, variables="{}"),
        Probe("non-string operationName", "{ __typename }", strict=True, operation_name=[1]),
        Probe(
            "typeId: null",
            f'mutation {{ updateReport(id: "{report_id}", input: {{typeId: null}}) '
            "{ __typename ... on ValidationFailed { message } } }",
            strict=True,
        ),
        Probe("three levels of 100 reports", DEEP_REPORTS, strict=True),
        Probe("Mongo operator variable", search, strict=True, variables={"s": {"$gt": ""}}),
        Probe("NUL variable", search, strict=True, variables={"s": "\u0000"}),
        Probe("lone surrogate variable", search, strict=True, variables={"s": "\ud800"}),
        Probe(
            "lone surrogate in ID",
            'mutation { recordView(reportId: "\ud800") { __typename } }',
            strict=True,
        ),
        Probe("huge Int", "{ reports(first: 99999999999999999999) { totalCount } }", strict=True),
        Probe("negative first", "{ reports(first: -1) { totalCount } }", strict=True),
    ]
    for template in string_arguments:
        with_report = template.replace("REPORT", report_id)
        slots = template.count("%s")
        for injection in INJECTIONS:
            document = with_report % ((graphql.print_ast(nodes.String(injection)),) * slots)
            probes.append(Probe(f"injection {injection[:12]!r}", document, strict=True))
        # And once breaking out of the literal, as an injection into a query string would.
        document = with_report % (('"" OR 1=1 --"',) * slots)
        probes.append(Probe("injection breaking the literal", document, strict=True))
    return probes


def hostile_http(report_id: str) -> list[HttpProbe]:
    json_type = {"content-type": "application/json"}
    body_10mb = json.dumps({"query": "{ __typename }", "variables": {"pad": "x" * 10_000_000}})
    return [
        HttpProbe("malformed JSON", "POST", b'{"query": "{ __typename }"', headers=json_type),
        HttpProbe("JSON array body", "POST", b'[{"query": "{ __typename }"}]', headers=json_type),
        HttpProbe("JSON string body", "POST", b'"{ __typename }"', headers=json_type),
        HttpProbe("empty body", "POST", b"", headers=json_type),
        HttpProbe("not UTF-8", "POST", b'{"query": "\xff\xfe"}', headers=json_type),
        HttpProbe(
            "lone surrogate in JSON",
            "POST",
            b'{"query": "{ reports(filter: {search: \\"\\ud800\\"}) { totalCount } }"}',
            headers=json_type,
        ),
        HttpProbe(
            "lone surrogate in echoed name",
            "POST",
            b'{"query": "{ \\ud800 }"}',
            headers=json_type,
        ),
        HttpProbe("NUL in JSON", "POST", b'{"query": "{ __typename \\u0000 }"}', headers=json_type),
        HttpProbe("10 MB body", "POST", body_10mb.encode(), headers=json_type),
        HttpProbe(
            "text/plain body", "POST", b"{ __typename }", headers={"content-type": "text/plain"}
        ),
        HttpProbe("no content type", "POST", b'{"query": "{ __typename }"}'),
        HttpProbe(
            "form body",
            "POST",
            b"query=%7B+__typename+%7D",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        HttpProbe(
            "mutation over GET",
            "GET",
            params={
                "query": f'mutation {{ recordView(reportId: "{report_id}") {{ __typename }} }}'
            },
        ),
        HttpProbe("GET without query", "GET", params={}),
        HttpProbe(
            "GET with non-JSON variables",
            "GET",
            params={"query": "{ __typename }", "variables": "{not json"},
        ),
        HttpProbe(
            "GET with list variables",
            "GET",
            params={"query": "{ __typename }", "variables": "[1]"},
        ),
        HttpProbe(
            "unknown persisted query",
            "POST",
            json.dumps(
                {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}}
            ).encode(),
            headers=json_type,
        ),
        HttpProbe(
            "bad bearer token",
            "POST",
            b'{"query": "{ __typename }"}',
            headers={**json_type, "authorization": "Bearer not-a-key"},
        ),
        HttpProbe(
            "unknown auth scheme",
            "POST",
            b'{"query": "{ __typename }"}',
            headers={**json_type, "authorization": "Basic Zm9vOmJhcg=="},
        ),
    ]


# Checking answers -------------------------------------------------------------------------


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def check_leaks(findings: Findings, sent: Sent, answer: str, shown: str) -> None:
    # A message may quote what the client sent; only text the client did not send leaks.
    leaked = [marker for marker in LEAKS if marker in answer and marker not in sent.text]
    if leaked:
        findings.add("leaks internals", sent, shown, detail=", ".join(leaked))


def check_result(findings: Findings, sent: Sent, body: object) -> None:
    """A GraphQL response object: ``data`` and/or ``errors``, every error coded."""
    shown = json.dumps(body)
    if not isinstance(body, dict) or not ({"data", "errors"} & body.keys()):
        findings.add("not a GraphQL response", sent, shown)
        return
    errors = body.get("errors", [])
    if not isinstance(errors, list) or ("errors" in body and not errors):
        findings.add("errors is not a non-empty list", sent, shown)
        return
    check_errors(findings, sent, errors)


def check_errors(findings: Findings, sent: Sent, errors: list[Any]) -> None:
    shown = json.dumps(errors)
    for error in errors:
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            findings.add("error without a message", sent, shown)
            continue
        extensions = error.get("extensions")
        code = extensions.get("code") if isinstance(extensions, dict) else None
        if code is None:
            # Quoted names and numbers vary from document to document; the fault does not.
            message = re.sub(r"'[^']*'|\"[^\"]*\"|\b-?\d+\b", "…", error["message"])
            findings.add("error without extensions.code", sent, shown, detail=message)
        elif code not in CODES:
            findings.add("unknown code", sent, shown, detail=str(code))
        elif code == "INTERNAL_SERVER_ERROR" and sent.strict:
            findings.add("INTERNAL_SERVER_ERROR for a valid or hostile request", sent, shown)


def check_http(findings: Findings, sent: Sent, response: httpx.Response) -> None:
    findings.answered += 1
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    text = response.text
    shown = f"{response.status_code} {content_type} {text}"
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    check_leaks(findings, sent, text + "\n".join(_strings(body)), shown)
    detail = f"HTTP {response.status_code} {content_type or 'without a content type'}"
    # One violation per answer: a server error first, then a body that is not GraphQL's.
    if response.status_code >= 500:
        findings.add("server error", sent, shown, detail=detail)
    elif content_type not in GRAPHQL_CONTENT_TYPES or body is None:
        findings.add("not a GraphQL JSON body", sent, shown, detail=detail)
    else:
        check_result(findings, sent, body)


# Sending over HTTP ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    address: str
    editor_key: str

    def auth(self, editor: bool) -> dict[str, str]:
        return {"authorization": f"Bearer {self.editor_key}"} if editor else {}


def _json_bytes(value: object) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        # Lone surrogates: JSON can carry them only as escapes.
        return json.dumps(value).encode()


def _get_params(probe: Probe) -> dict[str, str]:
    params = {"query": str(probe.document)}
    if probe.variables is not None:
        params["variables"] = json.dumps(probe.variables)
    if probe.operation_name is not None:
        params["operationName"] = str(probe.operation_name)
    return params


def _fits_url(probe: Probe) -> bool:
    # Past a few kilobytes a URL is refused by clients and servers alike, before the
    # gateway sees it; such documents go by POST.
    return len(urlencode(_get_params(probe))) < MAX_GET_QUERY


async def run_http(findings: Findings, target: Target, plan: list[tuple[Probe, str, bool]]) -> None:
    """Sends each probe by its method, anonymously or with the editor's key."""
    # A few at a time: enough to overlap store latency, few enough not to queue for long.
    limit = asyncio.Semaphore(6)
    accept = "application/graphql-response+json, application/json"

    async def one(http: httpx.AsyncClient, probe: Probe, method: str, editor: bool) -> None:
        sent = Sent.of(probe, f"{method} {'editor' if editor else 'anonymous'}")
        headers = {"accept": accept, **target.auth(editor)}
        async with limit:
            try:
                if method == "GET":
                    response = await http.get(
                        "/graphql", params=_get_params(probe), headers=headers
                    )
                else:
                    headers["content-type"] = "application/json"
                    response = await http.post(
                        "/graphql", content=_json_bytes(probe.payload()), headers=headers
                    )
            except httpx.HTTPError as error:
                findings.add("no HTTP answer", sent, repr(error), detail=type(error).__name__)
                return
        check_http(findings, sent, response)

    async with httpx.AsyncClient(
        base_url=f"http://{target.address}", timeout=ANSWER_TIMEOUT
    ) as http:
        await asyncio.gather(*(one(http, *item) for item in plan))


async def run_raw_http(findings: Findings, target: Target, probes: list[HttpProbe]) -> None:
    async with httpx.AsyncClient(
        base_url=f"http://{target.address}", timeout=ANSWER_TIMEOUT
    ) as http:
        for probe in probes:
            content = probe.content or b""
            shown = f"{probe.method} {probe.headers} {probe.params or ''} {content[:300]!r}"
            text = content.decode(errors="replace") + json.dumps(probe.params)
            sent = Sent(probe.method, probe.label, probe.strict, shown, text)
            try:
                response = await http.request(
                    probe.method,
                    "/graphql",
                    content=probe.content,
                    params=probe.params,
                    headers={"accept": "application/json", **probe.headers},
                )
            except httpx.HTTPError as error:
                findings.add("no HTTP answer", sent, repr(error), detail=type(error).__name__)
                continue
            check_http(findings, sent, response)


# Sending over WebSocket -------------------------------------------------------------------

TRANSPORT_WS = Subprotocol("graphql-transport-ws")
LEGACY_WS = Subprotocol("graphql-ws")


class SocketClosedError(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason!r}")
        self.code = code
        self.reason = reason


def _closed_error(closed: ConnectionClosed) -> SocketClosedError:
    # No close frame at all (the server dropped the connection) has no code.
    frame = closed.rcvd
    return SocketClosedError(frame.code if frame else None, str(closed))


@dataclass
class Socket:
    """One GraphQL WebSocket connection, running one operation at a time so that a close is
    attributed to the document that caused it."""

    connection: ClientConnection
    protocol: Subprotocol
    operations: int = 0

    @classmethod
    async def open(cls, target: Target, protocol: Subprotocol, editor: bool) -> Socket:
        connection = await connect(
            f"ws://{target.address}/graphql", subprotocols=[protocol], max_size=None
        )
        socket = cls(connection, protocol)
        payload = {"Authorization": f"Bearer {target.editor_key}"} if editor else {}
        await socket.send({"type": "connection_init", "payload": payload})
        ack = await socket.receive()
        if ack.get("type") != "connection_ack":
            await connection.close()
            raise SocketClosedError(None, f"no connection_ack: {ack}")
        return socket

    async def send(self, message: object) -> None:
        # The server may close between a keep-alive ping and its pong, or between two
        # operations: the close belongs to the document that caused it either way.
        try:
            await self.connection.send(_json_bytes(message).decode(errors="surrogatepass"))
        except ConnectionClosed as closed:
            raise _closed_error(closed) from closed

    async def receive(self) -> dict[str, Any]:
        while True:
            try:
                async with asyncio.timeout(ANSWER_TIMEOUT):
                    raw = await self.connection.recv()
            except ConnectionClosed as closed:
                raise _closed_error(closed) from closed
            message = json.loads(raw)
            if not isinstance(message, dict):
                return {"type": "not an object", "payload": message}
            if message.get("type") == "ping":
                await self.send({"type": "pong"})
            elif message.get("type") not in KEEP_ALIVE:
                return message

    async def run(self, payload: object) -> list[dict[str, Any]]:
        """Sends one operation and returns its messages, up to the one that ends it."""
        self.operations += 1
        start = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.send({"type": start, "id": str(self.operations), "payload": payload})
        messages = []
        while True:
            message = await self.receive()
            messages.append(message)
            if message.get("type") not in ("next", "data"):
                return messages

    async def close(self) -> None:
        await self.connection.close()


def check_socket_messages(findings: Findings, sent: Sent, messages: list[dict[str, Any]]) -> None:
    for message in messages:
        findings.answered += 1
        kind = message.get("type")
        payload = message.get("payload")
        shown = json.dumps(message)
        check_leaks(findings, sent, "\n".join(_strings(message)), shown)
        if kind in ("next", "data"):
            check_result(findings, sent, payload)
        elif kind == "error":
            # graphql-transport-ws sends a list of errors; graphql-ws sends one error.
            errors = [payload] if sent.channel.startswith(LEGACY_WS + " ") else payload
            if isinstance(errors, list) and errors:
                check_errors(findings, sent, errors)
            else:
                findings.add("error message without a list of errors", sent, shown)
        elif kind != "complete":
            findings.add("unexpected message", sent, shown, detail=str(kind))


def check_close(findings: Findings, sent: Sent, closed: SocketClosedError) -> None:
    findings.answered += 1
    shown = f"close {closed.code}: {closed.reason}"
    check_leaks(findings, sent, closed.reason, shown)
    # A client's protocol violation may end the connection with a 44xx code; a valid
    # operation may not, and no request may end it any other way.
    if closed.code is None or not 4400 <= closed.code < 4500:
        findings.add("connection closed", sent, shown, detail=f"close code {closed.code}")
    elif sent.label == "valid":
        findings.add(
            "connection closed on a valid document", sent, shown, detail=f"close code {closed.code}"
        )


async def run_websocket(
    findings: Findings, target: Target, protocol: Subprotocol, probes: list[Probe], editor: bool
) -> None:
    """Runs ``probes`` on one connection, opening another only after a close."""
    channel = f"{protocol} {'editor' if editor else 'anonymous'}"
    socket: Socket | None = None
    try:
        for probe in probes:
            sent = Sent.of(probe, channel)
            try:
                socket = socket or await Socket.open(target, protocol, editor)
                messages = await socket.run(probe.payload())
            except SocketClosedError as closed:
                socket = None
                check_close(findings, sent, closed)
                continue
            except (OSError, InvalidStatus, TimeoutError) as error:
                socket = None
                findings.add("WebSocket failed", sent, repr(error), detail=type(error).__name__)
                continue
            check_socket_messages(findings, sent, messages)
    finally:
        if socket is not None:
            await socket.close()


async def run_websocket_batches(
    findings: Findings, target: Target, protocol: Subprotocol, probes: list[Probe]
) -> None:
    batches = [
        probes[start : start + WEBSOCKET_BATCH] for start in range(0, len(probes), WEBSOCKET_BATCH)
    ]
    await asyncio.gather(
        *(
            run_websocket(findings, target, protocol, batch, editor=index % 2 == 1)
            for index, batch in enumerate(batches)
        )
    )


PROTOCOL_VIOLATIONS: list[tuple[str, list[object]]] = [
    ("subscribe before connection_init", [{"type": "subscribe", "id": "1", "payload": {}}]),
    ("not JSON", ["{not json"]),
    ("JSON array message", [[1, 2]]),
    ("JSON string message", ['"subscribe"']),
    ("unknown message type", [{"type": "bogus"}]),
    ("subscribe without id", [{"type": "subscribe", "payload": {"query": "{ __typename }"}}]),
    ("subscribe without payload", [{"type": "subscribe", "id": "1"}]),
    ("non-object payload", [{"type": "subscribe", "id": "1", "payload": "{ __typename }"}]),
    ("non-string query", [{"type": "subscribe", "id": "1", "payload": {"query": 1}}]),
    (
        "non-object variables",
        [
            {
                "type": "subscribe",
                "id": "1",
                "payload": {"query": "{ __typename }", "variables": [1]},
            }
        ],
    ),
    (
        "duplicate id",
        [{"type": "subscribe", "id": "1", "payload": {"query": DEEP_REPORTS}}] * 2,
    ),
    ("second connection_init", [{"type": "connection_init"}]),
]


async def run_protocol_violations(findings: Findings, target: Target) -> None:
    """Messages outside graphql-transport-ws: the server may close with 44xx, never worse,
    and the next connection still works."""
    for label, messages in PROTOCOL_VIOLATIONS:
        sent = Sent(f"{TRANSPORT_WS} protocol", label, True, json.dumps(messages), "")
        try:
            async with connect(
                f"ws://{target.address}/graphql", subprotocols=[TRANSPORT_WS]
            ) as connection:
                if label != "subscribe before connection_init":
                    await connection.send(json.dumps({"type": "connection_init"}))
                    await connection.recv()
                for message in messages:
                    await connection.send(
                        message if isinstance(message, str) else json.dumps(message)
                    )
                # Answers are read until every operation sent has ended (an operation that
                # the server refuses with an error, and leaves the socket open, is done),
                # or until the server has been quiet for a while.
                operations = sum(
                    isinstance(message, dict) and message.get("type") == "subscribe"
                    for message in messages
                )
                ended = 0
                async with asyncio.timeout(5):
                    while not operations or ended < operations:
                        answer = json.loads(await connection.recv())
                        if answer.get("type") not in KEEP_ALIVE:
                            check_socket_messages(findings, sent, [answer])
                        ended += answer.get("type") in OPERATION_ENDS
        except ConnectionClosed as closed:
            frame = closed.rcvd
            check_close(
                findings, sent, SocketClosedError(frame.code if frame else None, str(closed))
            )
        except TimeoutError:
            # Still open and quiet after the messages: ignoring them is an answer too.
            pass
        await check_alive(findings, target, f"after {label}")


# Liveness ---------------------------------------------------------------------------------


async def check_alive(findings: Findings, target: Target, when: str) -> None:
    expected = {"__typename": "Query"}
    query = {"query": "{ __typename }"}
    sent = Sent("HTTP", when, True, json.dumps(query), "")
    async with httpx.AsyncClient(base_url=f"http://{target.address}", timeout=10) as http:
        try:
            health = await http.get("/healthz")
            answer = await http.post("/graphql", json=query)
            if health.status_code != 200 or answer.json().get("data") != expected:
                shown = f"{health.status_code} {health.text} / {answer.status_code} {answer.text}"
                findings.add("gateway not answering", sent, shown)
        except (httpx.HTTPError, ValueError) as error:
            findings.add("gateway not answering", sent, repr(error))
    for protocol in (TRANSPORT_WS, LEGACY_WS):
        sent = Sent(protocol, when, True, json.dumps(query), "")
        try:
            socket = await Socket.open(target, protocol, editor=False)
            try:
                # graphql-ws carries subscriptions only, and this is a query: an
                # acknowledged connection is its sign of life.
                if protocol == TRANSPORT_WS:
                    messages = await socket.run(query)
                    if messages[0].get("payload", {}).get("data") != expected:
                        findings.add("WebSocket not answering", sent, json.dumps(messages))
            finally:
                await socket.close()
        except (SocketClosedError, OSError, InvalidStatus, TimeoutError) as error:
            findings.add("WebSocket not answering", sent, repr(error))


# Tests ------------------------------------------------------------------------------------


async def _target(address: str, connections: Connections, settings: Settings) -> Target:
    return Target(address, (await issue_key(connections, settings, Role.EDITOR)).key)


def _http_plan(probes: list[Probe]) -> list[tuple[Probe, str, bool]]:
    """Spreads probes over POST and GET, anonymous and editor; mutations only by POST."""
    plan = []
    for index, probe in enumerate(probes):
        method = "GET" if index % 2 and not probe.is_mutation and _fits_url(probe) else "POST"
        plan.append((probe, method, index % 4 >= 2))
    return plan


# Measured by coverage, the generated documents took twice as long, some 18 CPU-seconds of
# the default run's 190, to count a handful of lines that no other test reaches.
@pytest.mark.no_cover
@pytest.mark.parametrize(
    "shard", range(GENERATED_SHARDS), ids=lambda shard: f"shard-{shard + 1}-of-{GENERATED_SHARDS}"
)
async def test_generated_documents_get_coded_answers(
    settings: Settings, connections: Connections, caplog: pytest.LogCaptureFixture, shard: int
) -> None:
    probes = generated_probes()
    assert len(probes) >= 2_000
    share = list(probes[shard::GENERATED_SHARDS])
    given = stores_given()
    if given:
        # Documents that break the schema are refused before any store is read, the same
        # whichever stores answer: the default run sends them, and a run given stores
        # sends what reaches those stores.
        share = [probe for probe in share if probe.strict]
    await seed(connections, reports=20, progress=False)
    findings = Findings()
    async with serving(create_app(settings)) as address:
        target = await _target(address, connections, settings)
        # Half over HTTP, the rest over WebSocket, a connection per batch. graphql-ws runs
        # subscriptions only, and the documents are queries and mutations, so it refuses
        # every one before reading it: a quarter of the WebSocket share is enough to check
        # those refusals, and they read no store.
        over_http = share[: len(share) // 2]
        over_socket = share[len(share) // 2 :]
        await asyncio.gather(
            run_http(findings, target, _http_plan(over_http)),
            run_websocket_batches(
                findings, target, TRANSPORT_WS, [p for i, p in enumerate(over_socket) if i % 4]
            ),
            run_websocket_batches(findings, target, LEGACY_WS, [] if given else over_socket[::4]),
        )
        await check_alive(findings, target, "after the generated documents")
    assert not findings.violations, findings.summary() + logged_causes(caplog.records)


@asynccontextmanager
async def hostile_target(
    settings: Settings, connections: Connections
) -> AsyncIterator[tuple[Target, str]]:
    """A served gateway on a seeded catalogue, and the id of one of its reports."""
    await seed(connections, reports=20, progress=False)
    async with serving(create_app(settings)) as address:
        target = await _target(address, connections, settings)
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            first = await http.post(
                "/graphql", json={"query": "{ reports(first: 1) { edges { node { id } } } }"}
            )
        yield target, first.json()["data"]["reports"]["edges"][0]["node"]["id"]


async def test_hostile_http_requests_get_coded_answers(
    settings: Settings, connections: Connections, caplog: pytest.LogCaptureFixture
) -> None:
    findings = Findings()
    async with hostile_target(settings, connections) as (target, report_id):
        plan = [
            (probe, method, editor)
            for probe in hostile_probes(report_id)
            for method, editor in (("POST", False), ("POST", True), ("GET", False))
            if method == "POST" or (not probe.is_mutation and _fits_url(probe))
        ]
        await run_http(findings, target, plan)
        await run_raw_http(findings, target, hostile_http(report_id))
        await check_alive(findings, target, "after hostile HTTP requests")
    assert not findings.violations, findings.summary() + logged_causes(caplog.records)


async def test_hostile_websocket_messages_get_coded_answers(
    settings: Settings, connections: Connections, caplog: pytest.LogCaptureFixture
) -> None:
    findings = Findings()
    async with hostile_target(settings, connections) as (target, report_id):
        probes = hostile_probes(report_id)
        for protocol in (TRANSPORT_WS, LEGACY_WS):
            await run_websocket(findings, target, protocol, probes, editor=True)
        await run_protocol_violations(findings, target)
        await check_alive(findings, target, "after hostile WebSocket messages")
    assert not findings.violations, findings.summary() + logged_causes(caplog.records)
