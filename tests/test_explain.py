"""Explaining an operation: what each store ran for it, in order and by level, with the
plans of PostgreSQL and MongoDB and the commands sent to Redis."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bench.nested import QUERY as NESTED
from core.settings import Settings
from datasources import mysql_dialect, postgres_dialect
from datasources.models import Role
from gateway import cli, explain
from resolvers.nodes import to_global_id
from tests.clients import Seeded, issue_key

EXPLAIN = {"x-gateway-explain": "1"}
# The nested query's sources: a page with its count at the root, the relations of each
# report in PostgreSQL, its document in MongoDB and its counters in Redis, then the
# institutions of its authors a level further down.
NESTED_SOURCES = {
    "reports": "postgres",
    "authorships of a report": "postgres",
    "technologies of a report": "postgres",
    "document of a report": "mongodb",
    "counters of a report": "redis",
    "institutions by id": "postgres",
}


async def _as(seeded: Seeded, role: Role | None, **headers: str) -> dict[str, str]:
    if role is None:
        return headers
    key = await issue_key(seeded.connections, seeded.settings, role)
    return {"authorization": f"Bearer {key.key}", **headers}


async def _post(
    seeded: Seeded, headers: dict[str, str], query: str = NESTED, first: int = 5
) -> tuple[int, dict[str, Any]]:
    response = await seeded.client.post(
        "/graphql", json={"query": query, "variables": {"first": first}}, headers=headers
    )
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def test_the_explain_of_the_nested_query_names_every_statement_and_store(
    seeded: Seeded,
) -> None:
    admin = await _as(seeded, Role.ADMIN)
    status, body = await _post(seeded, {**admin, **EXPLAIN, "x-gateway-round-trips": "1"}, first=7)
    assert status == 200, body
    assert "errors" not in body, body["errors"]
    _, plain = await _post(seeded, admin, first=7)
    assert body["data"] == plain["data"]

    steps = body["extensions"]["explain"]["steps"]
    assert {step["source"]: step["store"] for step in steps} == NESTED_SOURCES
    assert [step["step"] for step in steps] == list(range(1, len(steps) + 1))
    # In the order they started, level by level.
    assert [step["startedMs"] for step in steps] == sorted(step["startedMs"] for step in steps)
    assert [step["level"] for step in steps] == sorted(step["level"] for step in steps)
    level = {step["source"]: step["level"] for step in steps}
    assert level["reports"] == 1
    assert level["authorships of a report"] < level["institutions by id"]
    for step in steps:
        assert step["sent"], step
        assert step["durationMs"] > 0
        assert not step["failed"]
    by_source = {step["source"]: step for step in steps}
    assert by_source["reports"]["rows"] == 7
    assert by_source["document of a report"]["keys"] == 7

    # Every statement and command the stores counted is there, each explained.
    sent = [(step["store"], item) for step in steps for item in step["sent"]]
    statements = [item for store, item in sent if store == "postgres"]
    commands = [item for store, item in sent if store == "mongodb"]
    redis = [item for store, item in sent if store == "redis"]
    round_trips = body["extensions"]["roundTrips"]
    assert len(statements) == round_trips["postgres"]
    assert len(commands) == round_trips["mongodb"]
    assert len(redis) >= round_trips["redis"] > 0
    backend = seeded.connections.engine.dialect.name
    for statement in statements:
        assert statement["sql"].startswith("SELECT")
        plan = statement["plan"]
        if backend == "sqlite":
            assert all(step["detail"] for step in plan["queryPlan"])
        elif backend == "mysql":
            assert plan["query_block"]["select_id"] == 1
        else:
            assert plan["Plan"]["Node Type"]
            assert plan["Execution Time"] >= 0
            assert "Shared Hit Blocks" in plan["Plan"]  # BUFFERS
    assert "FROM reports" in by_source["reports"]["sent"][0]["sql"]
    (find,) = commands
    assert find["command"] == "find"
    assert find["collection"] == "report_documents"
    report_ids = find["document"]["filter"]["_id"]["$in"]
    assert len(report_ids) == 7
    authorships = by_source["authorships of a report"]["sent"][0]
    parameters = authorships["parameters"]
    # An array on PostgreSQL, a JSON array on SQLite, a placeholder for each key on MySQL.
    if backend == "sqlite":
        keys = json.loads(parameters[0])
    elif backend == "mysql":
        keys = parameters
    else:
        keys = parameters[0]
    assert sorted(keys) == sorted(report_ids)
    assert find["explain"]["winningPlan"]
    assert "nReturned" in find["explain"]["executionStats"]
    assert {item["command"] for item in redis} >= {"ZMSCORE"}
    assert all(item["arguments"] for item in redis)


async def test_explaining_is_for_admins(seeded: Seeded) -> None:
    for role in (None, Role.READER, Role.EDITOR):
        status, body = await _post(seeded, await _as(seeded, role, **EXPLAIN))
        assert status == 403, body
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert "data" not in body


async def test_a_mutation_is_not_explained_nor_run(seeded: Seeded) -> None:
    views = await seeded.data("{ report(id: 1) { stats { views } } }")
    status, body = await _post(
        seeded,
        await _as(seeded, Role.ADMIN, **EXPLAIN),
        query="mutation { recordView(reportId: 1) { __typename } }",
    )
    assert status == 400, body
    assert "only queries are explained" in body["errors"][0]["message"]
    assert await seeded.data("{ report(id: 1) { stats { views } } }") == views


async def test_explained_requests_are_neither_answered_from_the_cache_nor_kept(
    seeded: Seeded,
) -> None:
    admin = await _as(seeded, Role.ADMIN)
    _, explained = await _post(seeded, {**admin, **EXPLAIN}, first=3)
    _, first = await _post(seeded, admin, first=3)
    assert first["extensions"]["cache"] == {"hit": False}
    _, again = await _post(seeded, admin, first=3)
    assert again["extensions"]["cache"]["hit"] is True
    _, explained_again = await _post(seeded, {**admin, **EXPLAIN}, first=3)
    assert "cache" not in explained_again["extensions"]
    assert explained_again["extensions"]["explain"]["steps"]
    assert explained_again["data"] == explained["data"] == first["data"]


async def test_hints_name_scans_an_index_would_spare(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(explain, "SCANNED_ROWS_WORTH_AN_INDEX", 10)
    status, body = await _post(
        seeded,
        await _as(seeded, Role.ADMIN, **EXPLAIN),
        query="query Q($first: Int!) { reports(first: $first, filter: {status: [DRAFT]}) "
        "{ totalCount edges { node { title } } } }",
    )
    assert status == 200, body
    hints = body["extensions"]["explain"]["hints"]
    count = "step 1 (postgres, reports): "
    if seeded.connections.engine.dialect.name == "sqlite":
        assert f"{count}SCAN reports read all its 400 rows" in " ".join(hints), hints
        return
    if seeded.connections.engine.dialect.name == "mysql":
        # Estimates, and of the page's statement too: MySQL counts without a plan of its own.
        # InnoDB samples its statistics, so the estimate is near the 400 rows, not always on them.
        estimates = [
            int(found.group(1))
            for hint in hints
            if "'Draft'" in hint
            and (found := re.search(r"full scan of reports, about (\d+) rows", hint))
        ]
        assert estimates, hints
        assert all(360 <= rows <= 440 for rows in estimates), hints
        return
    assert any(
        hint.startswith(f"{count}Seq Scan on reports read 400 rows")
        and "Filter: ((status)::text = 'Draft'::text)" in hint
        for hint in hints
    ), hints


def test_plan_hints_name_filters_and_joins() -> None:
    scan = {"Node Type": "Seq Scan", "Relation Name": "links", "Actual Rows": 5}
    join = {
        "Node Type": "Hash Join",
        "Hash Cond": "(links.report_id = reports.id)",
        "Plans": [{**scan, "Actual Rows": 5000}],
    }
    filtered = {**scan, "Filter": "(status = 'draft')", "Rows Removed by Filter": 4000}
    assert list(postgres_dialect.plan_hints({"Plan": scan}, 1000)) == []
    [joined] = postgres_dialect.plan_hints({"Plan": join}, 1000)
    assert "links read 5000 rows for a join ((links.report_id = reports.id))" in joined
    [kept] = postgres_dialect.plan_hints({"Plan": filtered}, 1000)
    assert "read 4005 rows to keep 5 (Filter: (status = 'draft'))" in kept


def test_a_mariadb_plan_whose_condition_quotes_a_phrase_is_read() -> None:
    # As MariaDB writes the plan of a search for `a\b "c\" d`: the quotes of the phrases
    # and the backslashes of the SQL literal unescaped.
    condition = r"""(match reports.title against ('+"a\\b" +"c\\" +"d"' in boolean mode))"""
    written = (
        '{\n  "query_block": {\n    "table": {\n      "table_name": "reports",\n'
        '      "access_type": "fulltext",\n'
        f'      "attached_condition": "{condition}"\n    }}\n  }}\n}}'
    )
    table = mysql_dialect.plan_document(written)["query_block"]["table"]
    assert table["access_type"] == "fulltext"
    assert table["attached_condition"] == condition


def test_command_hints_name_collection_scans() -> None:
    command = {"find": "report_documents", "filter": {"tags": {"$in": ["x"]}}}
    stats = {"totalDocsExamined": 400, "nReturned": 3}
    scan = {"stage": "FETCH", "inputStage": {"stage": "COLLSCAN"}}
    [hint] = explain.command_hints(command, "find", scan, stats)
    assert "COLLSCAN of report_documents examined 400 documents" in hint
    assert "tags" in hint
    sqlite_scan = [{"detail": "SCAN report_documents"}]
    assert list(explain.command_hints(command, "find", sqlite_scan, stats))
    indexed = {"stage": "FETCH", "inputStage": {"stage": "IXSCAN"}}
    assert list(explain.command_hints(command, "find", indexed, stats)) == []


def test_the_explain_command_runs_a_file(
    configured: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["seed", "--reports", "6", "--no-progress"]) == 0
    capsys.readouterr()
    document = tmp_path / "nested.graphql"
    document.write_text(NESTED)
    assert cli.main(["explain", str(document), "--variables", '{"first": 4}']) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["data"]["reports"]["edges"]) == 4
    steps = answer["extensions"]["explain"]["steps"]
    assert {step["source"]: step["store"] for step in steps} == NESTED_SOURCES
    assert all(
        item["plan"] for step in steps if step["store"] == "postgres" for item in step["sent"]
    )


def test_the_explain_command_refuses_a_mutation(
    configured: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = tmp_path / "write.graphql"
    document.write_text("mutation { recordView(reportId: 1) { __typename } }")
    assert cli.main(["explain", str(document)]) == 1
    assert "only queries are explained" in capsys.readouterr().err


# The lookups by a list of keys behind the nested query, each with the tables it reads.
# Not the institutions by id: a catalogue has few, and a server may rightly read them all.
KEYED_LOOKUPS: dict[str, tuple[str, ...]] = {
    "authorships of a report": ("report_authors", "authors"),
    "technologies of a report": ("report_technologies", "technologies"),
}
SEARCH = (
    "query Q($first: Int!, $search: String) { reports(first: $first, "
    "filter: {search: $search}) { totalCount edges { node { title } } } }"
)
BY_AUTHORS = (
    "query Q($first: Int!, $authors: [ID!]) { reports(first: $first, "
    "filter: {authorIds: $authors}) { totalCount edges { node { title } } } }"
)
# Each query, and the tables each of its steps (by source) must read through an index. Not
# the nested query's page of reports: that is read in its order, as it should be.
INDEXED_READS: list[tuple[str, dict[str, Any], dict[str, tuple[str, ...]]]] = [
    (NESTED, {}, KEYED_LOOKUPS),
    (SEARCH, {"search": "stream processing"}, {"reports": ("reports",)}),
    (
        BY_AUTHORS,
        {"authors": [to_global_id("Author", 1), to_global_id("Author", 2)]},
        {"reports": ("reports", "report_authors")},
    ),
]
# How MySQL reads a table through an index: a range of it, or a row per key.
MYSQL_INDEX_READS = frozenset({"range", "ref", "eq_ref", "const", "fulltext"})
ANALYZED = sorted(
    {table for _, _, indexed in INDEXED_READS for tables in indexed.values() for table in tables}
)


async def test_lookups_by_keys_searches_and_filters_read_through_indexes(
    seeded: Seeded,
) -> None:
    """A lookup of a level's keys reads the rows of those keys, not its whole tables; a
    search or a filter by authors the reports it matches: their cost follows what they
    find, not the catalogue."""
    backend = seeded.connections.engine.dialect.name
    if backend == "postgresql":
        pytest.skip("PostgreSQL plans by statistics that a test's new tables lack")
    if backend == "mysql":
        # MySQL recomputes a table's statistics in the background, some time after writes:
        # plan by the seeded catalogue's own, not by however far that had got.
        async with seeded.connections.engine.connect() as connection:
            await connection.execute(text(f"ANALYZE TABLE {', '.join(ANALYZED)}"))
    admin = await _as(seeded, Role.ADMIN, **EXPLAIN)
    for query, variables, indexed in INDEXED_READS:
        response = await seeded.client.post(
            "/graphql", json={"query": query, "variables": {"first": 5, **variables}}, headers=admin
        )
        body = response.json()
        assert response.status_code == 200, body
        steps = body["extensions"]["explain"]["steps"]
        for source, tables in indexed.items():
            (plan,) = [
                sent["plan"] for step in steps if step["source"] == source for sent in step["sent"]
            ]
            if backend == "sqlite":
                details = [step["detail"] for step in plan["queryPlan"]]
                for table in tables:
                    assert any(step.startswith(f"SEARCH {table} ") for step in details), (
                        source,
                        details,
                    )
                    assert not any(re.match(rf"SCAN {table}\b", step) for step in details), (
                        source,
                        details,
                    )
            else:
                reads = [(read["table_name"], read["access_type"]) for read in _mysql_reads(plan)]
                for table in tables:
                    accesses = [access for name, access in reads if name == table]
                    assert accesses, (source, reads)
                    assert all(access in MYSQL_INDEX_READS for access in accesses), (source, reads)


def _mysql_reads(plan: Any) -> list[dict[str, Any]]:
    """Every table access of a MySQL plan, however deep it nests them."""
    if isinstance(plan, dict):
        own = [plan] if "access_type" in plan else []
        return own + [read for child in plan.values() for read in _mysql_reads(child)]
    if isinstance(plan, list):
        return [read for child in plan for read in _mysql_reads(child)]
    return []


async def test_reports_join_their_types_only_for_a_page_that_shows_them(
    seeded: Seeded,
) -> None:
    """A count, or a page that shows no report's type, reads no ``report_types``: SQLite
    joined it for every report counted, and MySQL joins whatever a statement reads."""
    admin = await _as(seeded, Role.ADMIN, **EXPLAIN)
    for shown, joined in (("title", False), ("title type { name }", True)):
        query = f"{{ reports(first: 5) {{ totalCount edges {{ node {{ {shown} }} }} }} }}"
        response = await seeded.client.post("/graphql", json={"query": query}, headers=admin)
        body = response.json()
        assert response.status_code == 200, body
        assert "errors" not in body, body["errors"]
        (statement,) = [
            sent["sql"]
            for step in body["extensions"]["explain"]["steps"]
            if step["source"] == "reports"
            for sent in step["sent"]
        ]
        assert ("report_types" in statement) is joined, statement


async def test_a_search_of_any_text_is_explained(seeded: Seeded) -> None:
    """Quotes, backslashes and SQL in a search reach each server's plan as text, and the
    plan comes back readable: every statement explained, no error."""
    admin = await _as(seeded, Role.ADMIN, **EXPLAIN)
    for search in ('a\\b "c\\" d', '" OR 1=1 --', "\\", "'; DROP TABLE reports; --"):
        response = await seeded.client.post(
            "/graphql",
            json={
                "query": SEARCH,
                "variables": {"first": 5, "search": search},
            },
            headers=admin,
        )
        body = response.json()
        assert response.status_code == 200, body
        assert "errors" not in body, body["errors"]
        sent = [item for step in body["extensions"]["explain"]["steps"] for item in step["sent"]]
        statements = [item for item in sent if "sql" in item]
        assert statements, sent
        assert all("plan" in item for item in statements), (search, statements)
