"""Writes through GraphQL: results, validation, roles, injection, idempotency, counters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from sqlalchemy import text

from core.connections import Connections
from datasources.document_migrations import REPORT_DOCUMENTS
from datasources.report_writes import PENDING
from resolvers.nodes import to_global_id
from tests.clients import Caller, footprint

PAYLOAD = """
  __typename
  ... on ReportSaved { report { databaseId title abstract status publicationDate wordCount
    type { databaseId } authors { isPrimary author { databaseId } } technologies { databaseId }
    document { tags sections { heading body } references { doi } metadata revision } } }
  ... on ValidationFailed { fields { field message } }
  ... on NotFound { id }
  ... on Forbidden { requiredRole }
  ... on Conflict { message }
"""
VIEW = "mutation($id: ID!) { recordView(reportId: $id) { __typename } }"
CREATE = f"""mutation($input: CreateReportInput!, $key: String) {{
  createReport(input: $input, idempotencyKey: $key) {{ {PAYLOAD} }} }}"""


def report_input(**overrides: Any) -> dict[str, Any]:
    return {
        "title": "Adaptive Caching",
        "typeId": to_global_id("ReportType", 1),
        "authors": [
            {"authorId": to_global_id("Author", 1), "isPrimary": False},
            {"authorId": to_global_id("Author", 2), "isPrimary": True},
        ],
        "abstract": "We cache.",
        "publicationDate": "2025-03-01",
        "wordCount": 4200,
        "technologyIds": [to_global_id("Technology", 3)],
        "document": {
            "sections": [{"heading": "Intro", "body": "Why."}],
            "tags": ["caching", "graphql"],
            "references": [{"title": "A paper", "doi": "10.1/x"}],
            "metadata": {"funding": {"agency": "ERC"}, "pages": 12},
        },
    } | overrides


async def _rows(connections: Connections, statement: str, **parameters: Any) -> list[Any]:
    async with connections.engine.connect() as connection:
        return list((await connection.execute(text(statement), parameters)).all())


async def test_create_report_writes_both_stores_and_reads_back(
    call: Caller, connections: Connections
) -> None:
    result = (await call(CREATE, {"input": report_input()}))["createReport"]
    assert result["__typename"] == "ReportSaved"
    report = result["report"]
    assert report["status"] == "DRAFT"
    assert report["authors"] == [
        {"isPrimary": True, "author": {"databaseId": 2}},
        {"isPrimary": False, "author": {"databaseId": 1}},
    ]
    assert report["technologies"] == [{"databaseId": 3}]
    assert report["document"]["revision"] == 1
    assert report["document"]["metadata"] == {"funding": {"agency": "ERC"}, "pages": 12}
    stored = await connections.documents[REPORT_DOCUMENTS].find_one({"_id": report["databaseId"]})
    assert stored is not None
    assert PENDING not in stored
    assert stored["tags"] == ["caching", "graphql"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"title": "   "}, "title"),
        ({"title": "x" * 501}, "title"),
        ({"typeId": to_global_id("ReportType", 999)}, "typeId"),
        ({"typeId": to_global_id("Author", 1)}, "typeId"),
        ({"authors": []}, "authors"),
        (
            {
                "authors": [
                    {"authorId": to_global_id("Author", 1), "isPrimary": True},
                    {"authorId": to_global_id("Author", 2), "isPrimary": True},
                ]
            },
            "authors",
        ),
        (
            {
                "authors": [
                    {"authorId": to_global_id("Author", 1), "isPrimary": True},
                    {"authorId": to_global_id("Author", 1), "isPrimary": False},
                ]
            },
            "authors",
        ),
        ({"authors": [{"authorId": to_global_id("Author", 9999), "isPrimary": True}]}, "authors"),
        ({"technologyIds": [to_global_id("Technology", 9999)]}, "technologyIds"),
        ({"wordCount": -1}, "wordCount"),
        ({"publicationDate": "1800-01-01"}, "publicationDate"),
        ({"document": {"metadata": {"$where": "sleep(1000)"}}}, "document.metadata.$where"),
        ({"document": {"metadata": {"a.b": 1}}}, "document.metadata.a.b"),
        ({"document": {"metadata": {"x": {"$gt": ""}}}}, "document.metadata.x.$gt"),
        ({"document": {"metadata": "not an object"}}, "document.metadata"),
        ({"document": {"metadata": {"big": [2**63]}}}, "document.metadata.big[0]"),
        ({"document": {"tags": ["x" * 51]}}, "document.tags[0]"),
        (
            {"document": {"sections": [{"heading": "", "body": "b"}]}},
            "document.sections[0].heading",
        ),
        ({"document": {"metadata": {"blob": "x" * 1_100_000}}}, "document"),
    ],
)
async def test_each_validation_error_names_its_field(
    refusals: Caller, overrides: dict[str, Any], field: str
) -> None:
    before = await footprint(refusals.connections)
    result = (await refusals(CREATE, {"input": report_input(**overrides)}))["createReport"]
    assert result["__typename"] == "ValidationFailed"
    assert field in [problem["field"] for problem in result["fields"]]
    assert await footprint(refusals.connections) == before


HOSTILE = 'Robert\'); DROP TABLE reports; -- "quoted" \\ %_ 🚀 Zoë 東京 \u202e'


async def test_every_value_round_trips_exactly(call: Caller, connections: Connections) -> None:
    metadata = {"note": HOSTILE, "filter": '{"$gt": ""}', "list": [HOSTILE, 1, None, True]}
    created = (await call(CREATE, {"input": report_input(
        title=HOSTILE, abstract=HOSTILE,
        document={"sections": [{"heading": HOSTILE, "body": HOSTILE}], "tags": [HOSTILE[:50]],
                  "metadata": metadata},
    )}))["createReport"]["report"]  # fmt: skip
    assert created["title"] == HOSTILE.strip()
    assert created["abstract"] == HOSTILE
    assert created["document"]["sections"] == [{"heading": HOSTILE, "body": HOSTILE}]
    assert created["document"]["metadata"] == metadata
    assert (await _rows(connections, "SELECT count(*) FROM reports"))[0][0] == 21


MUTATIONS: dict[str, tuple[str, Callable[[Mapping[str, str]], dict[str, Any]]]] = {
    "createReport": (CREATE, lambda ids: {"input": report_input()}),
    "updateReport": (
        f"mutation($id: ID!) {{ updateReport(id: $id, input: {{wordCount: 7}}) {{ {PAYLOAD} }} }}",
        lambda ids: {"id": ids["report"]},
    ),
    "publishReport": (
        f"mutation($id: ID!) {{ publishReport(id: $id, to: REVIEW) {{ {PAYLOAD} }} }}",
        lambda ids: {"id": ids["draft"]},
    ),
    "upsertReportDocument": (
        f'mutation($id: ID!) {{ upsertReportDocument(reportId: $id, document: {{tags: ["t"]}})'
        f" {{ {PAYLOAD} }} }}",
        lambda ids: {"id": ids["report"]},
    ),
    "deleteReport": (
        "mutation($id: ID!) { deleteReport(id: $id) { __typename"
        " ... on Forbidden { requiredRole } } }",
        lambda ids: {"id": ids["report"]},
    ),
    "recordView": (VIEW, lambda ids: {"id": ids["report"]}),
    "recordDownload": (
        "mutation($id: ID!) { recordDownload(reportId: $id) { __typename"
        " ... on Counted { stats { downloads } } } }",
        lambda ids: {"id": ids["report"]},
    ),
}
ALLOWED = {
    "createReport": {"editor", "admin"},
    "updateReport": {"editor", "admin"},
    "publishReport": {"editor", "admin"},
    "upsertReportDocument": {"editor", "admin"},
    "deleteReport": {"admin"},
    "recordView": {"anonymous", "reader", "editor", "admin"},
    "recordDownload": {"anonymous", "reader", "editor", "admin"},
}


ROLES = ("anonymous", "reader", "editor", "admin")


async def _call_as(caller: Caller, mutation: str, role: str) -> dict[str, Any]:
    draft = await _rows(caller.connections, "SELECT id FROM reports WHERE status = 'Draft' LIMIT 1")
    ids = {"report": to_global_id("Report", 5), "draft": to_global_id("Report", draft[0].id)}
    document, variables = MUTATIONS[mutation]
    result: dict[str, Any] = (await caller(document, variables(ids), role=role))[mutation]
    return result


@pytest.mark.parametrize(
    ("mutation", "role"),
    [(mutation, role) for mutation in MUTATIONS for role in ROLES if role in ALLOWED[mutation]],
)
async def test_every_mutation_runs_at_the_roles_it_allows(
    call: Caller, mutation: str, role: str
) -> None:
    result = await _call_as(call, mutation, role)
    assert result["__typename"] not in ("Forbidden", "ValidationFailed"), result


@pytest.mark.parametrize(
    ("mutation", "role"),
    [(mutation, role) for mutation in MUTATIONS for role in ROLES if role not in ALLOWED[mutation]],
)
async def test_every_mutation_is_refused_below_its_role(
    refusals: Caller, mutation: str, role: str
) -> None:
    before = await footprint(refusals.connections)
    result = await _call_as(refusals, mutation, role)
    assert result == {"__typename": "Forbidden", "requiredRole": result["requiredRole"]}
    assert result["requiredRole"] in ("editor", "admin")
    assert await footprint(refusals.connections) == before


async def test_update_changes_only_what_is_given(call: Caller) -> None:
    report_id = to_global_id("Report", 4)
    before = (await call(f'{{ report(id: "{report_id}") {{ title wordCount }} }}'))["report"]
    updated = (await call(
        f"mutation($id: ID!) {{ updateReport(id: $id, input: {{wordCount: 99, abstract: null,"
        f" authors: [{{authorId: \"{to_global_id('Author', 3)}\", isPrimary: true}}]}})"
        f" {{ {PAYLOAD} }} }}",
        {"id": report_id},
    ))["updateReport"]["report"]  # fmt: skip
    assert updated["title"] == before["title"]
    assert updated["wordCount"] == 99
    assert updated["abstract"] is None
    assert updated["authors"] == [{"isPrimary": True, "author": {"databaseId": 3}}]
    missing = (await call(
        f"mutation {{ updateReport(id: \"{to_global_id('Report', 9999)}\", input: {{wordCount: 1}})"
        f" {{ {PAYLOAD} }} }}"
    ))["updateReport"]  # fmt: skip
    assert missing["__typename"] == "NotFound"


@pytest.mark.parametrize("field", ["typeId", "authors", "technologyIds"])
async def test_null_for_a_field_that_cannot_be_cleared_is_a_validation_failure(
    refusals: Caller, field: str
) -> None:
    report_id = to_global_id("Report", 4)
    before = await footprint(refusals.connections)
    result = (await refusals(
        f"mutation($id: ID!) {{ updateReport(id: $id, input: {{{field}: null}})"
        " { __typename ... on ValidationFailed { fields { field message } } } }",
        {"id": report_id},
    ))["updateReport"]  # fmt: skip
    assert result["__typename"] == "ValidationFailed"
    assert [error["field"] for error in result["fields"]] == [field]
    assert await footprint(refusals.connections) == before


@pytest.mark.parametrize("given", [to_global_id("Author", 4), "not-an-id"])
async def test_a_status_move_of_an_id_that_names_no_report_is_refused(
    refusals: Caller, given: str
) -> None:
    before = await footprint(refusals.connections)
    result = (await refusals(
        "mutation($id: ID!) { publishReport(id: $id, to: REVIEW) {"
        " __typename ... on ValidationFailed { fields { field message } } } }",
        {"id": given},
    ))["publishReport"]  # fmt: skip
    assert result["__typename"] == "ValidationFailed"
    assert [error["field"] for error in result["fields"]] == ["id"]
    assert await footprint(refusals.connections) == before


async def test_status_moves_one_step_at_a_time(call: Caller, connections: Connections) -> None:
    created = await call(CREATE, {"input": report_input(publicationDate=None)})
    report_id = to_global_id("Report", created["createReport"]["report"]["databaseId"])
    move = (
        "mutation($id: ID!, $to: ReportStatus!) {"
        f" publishReport(id: $id, to: $to) {{ {PAYLOAD} }} }}"
    )
    skipped = (await call(move, {"id": report_id, "to": "PUBLISHED"}))["publishReport"]
    assert skipped["__typename"] == "ValidationFailed"
    for status in ("REVIEW", "PUBLISHED", "ARCHIVED"):
        moved = (await call(move, {"id": report_id, "to": status}))["publishReport"]
        assert moved["report"]["status"] == status
        if status == "PUBLISHED":
            assert moved["report"]["publicationDate"] is not None
    back = (await call(move, {"id": report_id, "to": "DRAFT"}))["publishReport"]
    assert back["__typename"] == "ValidationFailed"


async def test_document_revisions_refuse_stale_writes(call: Caller) -> None:
    report_id = to_global_id("Report", 6)
    upsert = (
        "mutation($id: ID!, $rev: Int, $tags: [String!]) { upsertReportDocument(reportId: $id,"
        f" expectedRevision: $rev, document: {{tags: $tags}}) {{ {PAYLOAD} }} }}"
    )
    first = await call(upsert, {"id": report_id, "rev": 1, "tags": ["a"]})
    assert first["upsertReportDocument"]["report"]["document"]["revision"] == 2
    assert first["upsertReportDocument"]["report"]["document"]["tags"] == ["a"]
    stale = await call(upsert, {"id": report_id, "rev": 1, "tags": ["b"]})
    assert stale["upsertReportDocument"]["__typename"] == "Conflict"
    unconditional = await call(upsert, {"id": report_id, "rev": None, "tags": ["c"]})
    assert unconditional["upsertReportDocument"]["report"]["document"]["revision"] == 3


async def test_retries_with_one_idempotency_key_write_once(
    call: Caller, connections: Connections
) -> None:
    variables = {"input": report_input(title="Once"), "key": "client-42-attempt"}
    first = (await call(CREATE, variables))["createReport"]["report"]["databaseId"]
    again = (await call(CREATE, variables))["createReport"]["report"]["databaseId"]
    racing = await asyncio.gather(*(
        call(CREATE, {"input": report_input(title="Raced"), "key": "raced"}) for _ in range(5)
    ))  # fmt: skip
    raced_ids = {result["createReport"]["report"]["databaseId"] for result in racing}
    assert first == again
    assert len(raced_ids) == 1
    titles = await _rows(
        connections,
        "SELECT title, count(*) FROM reports"
        " WHERE title IN ('Once', 'Raced') GROUP BY title ORDER BY title",
    )
    assert [tuple(row) for row in titles] == [("Once", 1), ("Raced", 1)]
    documents = connections.documents[REPORT_DOCUMENTS]
    assert await documents.count_documents({"_id": {"$in": [first, *raced_ids]}}) == 2


async def test_delete_removes_the_report_everywhere(call: Caller, connections: Connections) -> None:
    await call(VIEW, {"id": to_global_id("Report", 8)})
    deleted = (await call(
        "mutation($id: ID!) { deleteReport(id: $id) {"
        " __typename ... on ReportDeleted { deletedId } } }",
        {"id": to_global_id("Report", 8)}, role="admin",
    ))["deleteReport"]  # fmt: skip
    assert deleted == {"__typename": "ReportDeleted", "deletedId": to_global_id("Report", 8)}
    assert await _rows(connections, "SELECT id FROM reports WHERE id = 8") == []
    assert await _rows(connections, "SELECT 1 FROM report_authors WHERE report_id = 8") == []
    assert await connections.documents[REPORT_DOCUMENTS].find_one({"_id": 8}) is None
    assert await connections.redis.exists("report:8:stats") == 0
    assert await connections.redis.zscore("leaderboard:views", "8") is None
    again = (await call(
        "mutation($id: ID!) { deleteReport(id: $id) { __typename } }",
        {"id": to_global_id("Report", 8)}, role="admin",
    ))["deleteReport"]  # fmt: skip
    assert again == {"__typename": "NotFound"}


async def test_a_thousand_concurrent_views_count_exactly(
    call: Caller, connections: Connections
) -> None:
    await connections.redis.delete("report:3:stats")
    start = float(await connections.redis.zscore("leaderboard:views", "3") or 0)
    document = VIEW
    variables = {"id": to_global_id("Report", 3)}
    for _ in range(10):
        results = await asyncio.gather(
            *(call(document, variables, role="anonymous") for _ in range(100))
        )
        assert {result["recordView"]["__typename"] for result in results} == {"Counted"}
    assert int(await connections.redis.hget("report:3:stats", "views") or 0) == 1000
    assert await connections.redis.zscore("leaderboard:views", "3") == start + 1000
    missing = await call(
        "mutation($id: ID!) { recordDownload(reportId: $id) { __typename } }",
        {"id": to_global_id("Report", 999)},
    )
    assert missing["recordDownload"] == {"__typename": "NotFound"}
