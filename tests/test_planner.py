"""The planned executor against Strawberry's: every query twice, on the same stores, and the
two answers compared byte for byte (data, errors, their order), with the same round trips."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import graphql
import httpx
import pytest
from graphql.execution.collect_fields import collect_subfields
from hypothesis_graphql import queries
from sqlalchemy import Engine, event

from core import sources
from core.settings import Environment, Settings
from datasources import driver_reads
from datasources.documents import DOCUMENT_FIELDS, documents_by_report
from gateway.app import create_app
from gateway.schema import catalogue_schema
from planner import execute
from planner.execute import Planner
from tests.clients import Seeded, lifespan_client
from tests.generated import CUSTOM_SCALARS, draw

GENERATED_DOCUMENTS = 640
REQUEST_ID = re.compile(rb'"requestId":"[0-9a-f]{32}"')

REPORT_FIELDS = """
  id databaseId title abstract publicationDate wordCount status createdAt updatedAt
  type { id name description }
  authors { isPrimary position author { id name orcid institution { name country website } } }
  primaryAuthor { name }
  technologies { name version technologyType description }
  document {
    tags sections { heading body } references { title url doi } metadata revision updatedAt
  }
  stats { views downloads }
"""
CORPUS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "every report field": (
        f"{{ reports(first: 7) {{ totalCount edges {{ cursor node {{ {REPORT_FIELDS} }} }} }} }}",
        None,
    ),
    "aliases": (
        "{ a: reports(first: 2) { edges { node { t: title x: title type { n: name } } } }"
        " b: reports(last: 2) { pageInfo { hasPreviousPage startCursor } } }",
        None,
    ),
    "documents read in part, under aliases": (
        "{ reports(first: 4) { edges { node { a: document { tags } b: document { __typename }"
        " c: document { tags metadata sections { heading } } } } } }",
        None,
    ),
    "named and inline fragments, __typename": (
        'query { reports(first: 3) { ...Page } nodes(ids: ["UmVwb3J0OjE=", "QXV0aG9yOjI=",'
        ' "VGVjaG5vbG9neToz", "SW5zdGl0dXRpb246NA==", "UmVwb3J0VHlwZTox", "UmVwb3J0Ojk5OTk5"])'
        " { __typename id ... on Report { title } ... on Author { name ...Who } ... on Technology"
        " { name } ... on Institution { name } ... on ReportType { name } } }"
        " fragment Page on ReportConnection { __typename edges { node { __typename ...Title } } }"
        " fragment Title on Report { title }"
        " fragment Who on Author { institution { __typename name } }",
        None,
    ),
    "variables with defaults, skip and include": (
        "query($n: Int = 4, $withType: Boolean! = true, $skipTitle: Boolean!)"
        " { reports(first: $n) { edges { node { title @skip(if: $skipTitle)"
        " type @include(if: $withType) { name } } } } }",
        {"skipTitle": True},
    ),
    "filters and orders": (
        "query($filter: ReportFilterInput) { reports(first: 5, filter: $filter,"
        " orderBy: {field: WORD_COUNT, direction: ASC}) { totalCount edges { node { title"
        " wordCount status } } } }",
        {"filter": {"status": ["PUBLISHED", "REVIEW"], "publishedFrom": "2020-01-01"}},
    ),
    "full-text search and tags": (
        '{ reports(first: 5, filter: {search: "data"}) { totalCount edges { node { title } } }'
        ' tagged: reports(first: 5, filter: {tags: ["graphql", "redis"]}) { totalCount } }',
        None,
    ),
    "pages after a cursor, and backwards": (
        "{ authors(first: 3) { pageInfo { endCursor hasNextPage } edges { node { name } } }"
        " institutions(last: 2) { edges { cursor node { name } } }"
        " technologies(first: 2) { edges { node { name reports(first: 2) { totalCount"
        " edges { node { title } } } } } } }",
        None,
    ),
    "nested lists under lists": (
        "{ institutions(first: 4) { edges { node { name authors(first: 3) { totalCount edges"
        " { node { name reports(first: 2, orderBy: {field: TITLE, direction: ASC}) { edges"
        " { node { title authors { author { name } } } } } } } } } } }",
        None,
    ),
    "root lookups and leaderboards": (
        '{ report(id: "3") { title } byId: report(id: "UmVwb3J0OjQ=") { title }'
        ' missing: report(id: "99999") { title } topReports(by: DOWNLOADS, limit: 3) { title }'
        " reportTypes { name reports(first: 1) { totalCount } } service { name version } }",
        None,
    ),
    "one type read in part in one place and whole in another": (
        "{ reports(first: 3) { edges { node { title } } }"
        " again: reports(first: 3) { edges { node { abstract createdAt updatedAt status } } }"
        ' report(id: "1") { abstract type { description } }'
        " authors(first: 2) { edges { node { name } } }"
        " technologies(first: 2) { edges { node { id reports(first: 1) { edges { node"
        " { title authors { author { orcid firstName lastName institution { website } } } } } }"
        " } } } }",
        None,
    ),
    "a field readers only may read": (
        "{ authors(first: 3) { edges { node { name email } } } }",
        None,
    ),
    "arguments out of range and bad ids": (
        '{ reports(first: 500) { totalCount } node(id: "not-an-id") { id }'
        " ok: reports(first: 1) { totalCount } }",
        None,
    ),
    "bad variables": ("query($n: Int!) { reports(first: $n) { totalCount } }", {"n": "x"}),
    "missing variables": ("query($n: Int!) { reports(first: $n) { totalCount } }", None),
}


async def _both(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None
) -> tuple[tuple[int, bytes, Any], tuple[int, bytes, Any]]:
    answers = []
    for executor in ("strawberry", "planner"):
        response = await client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"x-gateway-executor": executor, "x-gateway-round-trips": "1"},
        )
        body = response.json()
        extensions = body.pop("extensions", {})
        answers.append(
            (
                response.status_code,
                REQUEST_ID.sub(b'"requestId":"-"', json.dumps(body).encode()),
                (extensions.get("roundTrips"), extensions.get("executor")),
            )
        )
    return answers[0], answers[1]


@pytest.mark.parametrize("name", list(CORPUS))
async def test_both_executors_answer_alike(seeded: Seeded, name: str) -> None:
    query, variables = CORPUS[name]
    (status, body, (trips, executor)), (planned_status, planned_body, planned) = await _both(
        seeded.client, query, variables
    )
    assert planned_body == body
    assert planned_status == status
    if executor is not None:  # the request got as far as executing
        assert executor == "strawberry"
        assert planned[1] == "planner"
        # Once an error nulls the whole answer, what either executor had already sent to
        # the stores for the other root fields depends on timing alone.
        if json.loads(body).get("data") is not None:
            assert planned[0] == trips


@pytest.mark.parametrize(
    "broken",
    [
        {"mongo_url": "mongodb://127.0.0.1:1/?directConnection=true"},
        {"redis_url": "redis://127.0.0.1:1/0"},
        {"database_url": "postgresql+asyncpg://nobody@127.0.0.1:1/none"},
    ],
    ids=["mongodb stopped", "redis stopped", "postgresql stopped"],
)
async def test_a_stopped_store_costs_the_same_fields_on_both(
    settings: Settings, seeded: Seeded, broken: dict[str, str]
) -> None:
    """Null and a coded error on exactly the fields that need the store, propagated to the
    nearest nullable parent, on either executor."""
    pointed = settings.model_copy(
        update={
            "database_url": seeded.settings.database_url,
            "mongo_url": seeded.settings.mongo_url,
            "mongo_database": seeded.settings.mongo_database,
            "redis_url": seeded.settings.redis_url,
            "store_timeout": 1.0,
            "counter_snapshot_interval": 0,
            **broken,
        }
    )
    query = (
        f"{{ reports(first: 3) {{ edges {{ node {{ {REPORT_FIELDS} }} }} }} service {{ name }} }}"
    )
    # Started as in production, where the lifespan applies no migrations (they would need
    # the stopped store); requests still see the development settings.
    application = create_app(
        pointed.model_copy(
            update={"environment": Environment.PRODUCTION, "persisted_queries_only": False}
        )
    )
    application.state.settings = pointed
    async with lifespan_client(application) as client:
        strawberry, planned = await _both(client, query, None)
    assert planned[1] == strawberry[1]
    assert b"SERVICE_UNAVAILABLE" in planned[1]


async def test_a_document_is_fetched_only_as_far_as_it_is_selected(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[tuple[Any, set[str]]] = []

    async def documents(**arguments: Any) -> list[dict[str, Any] | None]:
        found = await documents_by_report(**arguments)
        fetched.append((arguments["paths"], {key for doc in found if doc for key in doc}))
        return found

    monkeypatch.setattr(sources, "documents_by_report", documents)
    query = (
        "{ reports(first: 5) { edges { node {"
        " a: document { tags } b: document { metadata __typename } } } } }"
    )
    response = await seeded.client.post("/graphql", json={"query": query})
    assert "errors" not in response.json()
    # One call for both aliases, for the keys they read, and the store sent no more.
    assert fetched == [(frozenset({"tags", "metadata"}), {"_id", "tags", "metadata"})]

    # Most of a document is fetched whole: naming every path would cost the store more.
    fetched.clear()
    most = (
        "{ reports(first: 5) { edges { node { document { tags metadata revision updatedAt } } } } }"
    )
    response = await seeded.client.post("/graphql", json={"query": most})
    assert "errors" not in response.json()
    assert fetched == [
        (frozenset({"tags", "metadata", "revision", "updated_at"}), {"_id", *DOCUMENT_FIELDS})
    ]

    fetched.clear()
    await seeded.client.post(
        "/graphql", json={"query": query}, headers={"x-gateway-executor": "strawberry"}
    )
    assert fetched[0][0] is None  # Strawberry's objects are built whole


async def test_an_operation_s_fields_are_collected_once_unless_a_variable_decides_them(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    collections: list[str] = []

    def counted(*arguments: Any) -> Any:
        collections.append(arguments[4].name)
        return collect_subfields(*arguments)

    monkeypatch.setattr(execute, "collect_subfields", counted)

    async def nodes(query: str, variables: dict[str, Any] | None = None) -> list[Any]:
        response = await seeded.client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            # Executed each time, not answered from the response cache.
            headers={"cache-control": "no-cache"},
        )
        body = response.json()
        assert "errors" not in body
        return [edge["node"] for edge in body["data"]["reports"]["edges"]]

    fixed = "{ reports(first: 2) { edges { node { title type { name } } } } }"
    first = await nodes(fixed)
    assert collections
    collections.clear()
    assert await nodes(fixed) == first
    assert collections == []

    decided = (
        "query($t: Boolean!) { reports(first: 2) { edges { node { databaseId"
        " title @include(if: $t) } } } }"
    )
    assert all("title" in node for node in await nodes(decided, {"t": True}))
    assert all("title" not in node for node in await nodes(decided, {"t": False}))
    assert all("title" in node for node in await nodes(decided, {"t": True}))


@contextmanager
def _statements_sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The SQL the gateway sends meanwhile: read on the driver, or through SQLAlchemy (the
    other backends)."""
    statements: list[str] = []
    monkeypatch.setattr(driver_reads, "note_command", statements.append)

    def sent(_: Any, __: Any, statement: str, *___: Any) -> None:
        statements.append(statement)

    # Every engine's: the gateway's are its own.
    event.listen(Engine, "before_cursor_execute", sent)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", sent)


async def test_a_planned_query_fetches_only_the_columns_it_reads(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = (
        "{ reports(first: 5) { edges { node { title type { name } authors { author { name } }"
        " technologies { name } } } } }"
    )
    # What no field shows: a report's abstract and timestamps, an author's email, a
    # technology's description.
    unread = ("reports.abstract", "reports.created_at", "authors.email", "technologies.description")
    for executor in ("planner", "strawberry"):
        with _statements_sent(monkeypatch) as statements:
            response = await seeded.client.post(
                "/graphql",
                json={"query": query},
                # Executed each time, not answered from the response cache.
                headers={"x-gateway-executor": executor, "cache-control": "no-cache"},
            )
        assert "errors" not in response.json()
        sent = " ".join(statements).lower()
        assert "reports.title" in sent
        assert "authors.name" in sent
        # Strawberry's objects are built whole.
        assert [column in sent for column in unread] == [executor == "strawberry"] * 4, sent


def test_an_operation_reads_the_fields_behind_what_it_selects() -> None:
    planner = Planner(catalogue_schema()._schema)

    def read(query: str) -> dict[str, set[str]]:
        return {
            table: set(fields)
            for table, fields in planner.readings.of(graphql.parse(query)).items()
        }

    assert read(
        "{ reports(first: 2) { edges { node { databaseId title status type { name }"
        " authors { author { name institution { name } } } technologies { name } } } } }"
    ) == {
        # The type's columns come with the report's: its record carries them.
        "reports": {"id", "title", "status", "report_type_id", "type_name", "type_description"},
        "report_types": {"name"},
        # The key of the relation to the institution.
        "authors": {"name", "institution_id"},
        "institutions": {"name"},
        "technologies": {"name"},
    }
    # A resolver of Strawberry's (a field for readers only) reads what it likes: the whole
    # table; and a field of an interface is read on each type that implements it.
    assert read('{ nodes(ids: ["x"]) { id ... on Author { email } } }') == {
        "reports": {"id"},
        "report_types": {"id"},
        "institutions": {"id"},
        "technologies": {"id"},
    }
    # Whatever the variables leave out: the reading is the document's.
    assert read(
        "query($t: Boolean!) { reports(first: 1) { edges { node { title @include(if: $t) } } } }"
    ) == {"reports": {"title"}}
    document = graphql.parse("{ authors(first: 1) { edges { node { orcid } } } }")
    assert planner.readings.of(document) is planner.readings.of(document)


def _alike(answer: tuple[int, bytes]) -> tuple[int, Any, list[Any], bool]:
    """An answer as executors must agree on it: its status, data and errors, but of the
    errors beneath a position that a propagated null took out of the data, only whether
    there are any. Which of those an executor reports depends on the order it ran the
    fields in: graphql-core reports those raised before the null propagated and drops the
    rest, and the planner runs fields in another order (level by level)."""
    status, body = answer
    decoded = json.loads(body)
    data, errors = decoded.get("data"), decoded.get("errors", [])
    shown = [error for error in errors if _placed(data, error.get("path"))]
    return status, data, shown, len(shown) < len(errors)


def _placed(data: Any, path: list[str | int] | None) -> bool:
    """Whether the object that holds the field at ``path`` is in the data."""
    if path is None:
        return True
    held = data
    for key in path[:-1]:
        if held is None:
            return False
        held = held[key]
    return held is not None


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


# Not measured by coverage, as the fuzz tests' generated documents (tests/test_fuzz.py).
@pytest.mark.no_cover
async def test_generated_queries_answer_alike(seeded: Seeded) -> None:
    sdl = catalogue_schema().as_str()
    schema = graphql.build_schema(sdl)
    assert schema.query_type is not None
    roots = sorted(schema.query_type.fields)
    documents = [
        document
        for name, count in zip(roots, _shares(GENERATED_DOCUMENTS, len(roots)), strict=True)
        for document in draw(
            queries(sdl, fields=[name], custom_scalars=CUSTOM_SCALARS),
            count,
            recipe=f"queries of {name}",
            schema=sdl,
            caller=__file__,
        )
    ]
    assert len(documents) >= 500
    differences = []
    for document in documents:
        strawberry, planned = await _both(seeded.client, document, None)
        if _alike(strawberry[:2]) != _alike(planned[:2]):
            differences.append((document, strawberry[1][:400], planned[1][:400]))
    assert not differences, (
        f"{len(differences)} of {len(documents)} differ; first: {differences[:3]}"
    )
