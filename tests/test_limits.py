"""Limits before execution: each one refuses with QUERY_TOO_COMPLEX, what it measured and
the limit, before any store is asked; the defaults accept every documented query."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from graphql import get_introspection_query, parse

from core.settings import Settings
from gateway.app import create_app
from gateway.limits import Limits, measure_shape
from gateway.schema import operation_cache
from resolvers.pagination import DEFAULT_PAGE_SIZE
from tests.clients import Seeded, lifespan_client
from tests.faults import HeldStoreCall

GRAPHQL_RESPONSE = "application/graphql-response+json"
ATTACK = (
    "{ reports(first:100) { edges { node { title authors { author { name reports(first:100) {"
    " edges { node { title authors { author { name reports(first:100) { edges { node { title"
    " } } } } } } } } } } } } } }"
)
NESTED_REPORTS = (
    "a{i}: reports(first: 100) {{ edges {{ node {{ title authors {{ author {{ name"
    " reports(first: 100) {{ edges {{ node {{ title }} }} }} }} }} }} }} }}"
)
README = Path(__file__).parents[1] / "README.md"


async def _refusal(seeded: Seeded, query: str, **body: Any) -> dict[str, Any]:
    response = await seeded.client.post(
        "/graphql",
        json={"query": query, **body},
        headers={"accept": GRAPHQL_RESPONSE, "x-gateway-round-trips": "1"},
    )
    assert response.status_code == 400, response.text
    payload: dict[str, Any] = response.json()
    assert "data" not in payload
    (error,) = payload["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX", error
    return dict(error["extensions"])


TAGS = ", ".join(f'"t{i}"' for i in range(3000))


@pytest.mark.parametrize(
    ("limit", "query", "measured", "maximum"),
    [
        ("document bytes", "{ __typename } #" + "x" * 40_000, 40_016, 32 * 1024),
        ("tokens", f"{{ reports(filter: {{tags: [{TAGS}]}}) {{ totalCount }} }}", 3_016, 3_000),
        ("depth", ATTACK, 14, 12),
        # Deeper than the parser recurses: measured by its braces.
        (
            "depth",
            "{ reports { edges { node { authors { author {" * 120
            + " name"
            + " } } } } }" * 120
            + " }",
            720,
            12,
        ),
        (
            "aliases",
            "{ reports { edges { node { "
            + " ".join(f"a{i}: title" for i in range(31))
            + " } } } }",
            31,
            30,
        ),
        ("root fields", "{ " + "__typename " * 21 + "}", 21, 20),
        ("directives per field", "{ __typename" + " @include(if: true)" * 6 + " }", 6, 5),
        (
            "cost",
            "{ " + " ".join(NESTED_REPORTS.format(i=i) for i in range(3)) + " }",
            626_118,
            500_000,
        ),
    ],
    ids=[
        "document bytes",
        "tokens",
        "depth",
        "depth past the parser",
        "aliases",
        "root fields",
        "directives",
        "cost",
    ],
)
async def test_each_limit_refuses_with_what_it_measured(
    seeded: Seeded, limit: str, query: str, measured: int, maximum: int
) -> None:
    extensions = await _refusal(seeded, query)
    assert extensions == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": limit,
        "measured": measured,
        "maximum": maximum,
    }


async def test_the_attack_query_is_refused_by_depth_and_by_cost(seeded: Seeded) -> None:
    assert (await _refusal(seeded, ATTACK))["limit"] == "depth"
    # One level shallower, within the depth limit, it is still refused: by its cost.
    shallower = ATTACK.replace(
        "reports(first:100) { edges { node { title } } }", "reports(first:5) { totalCount }"
    )
    refused = await _refusal(seeded, shallower)
    assert refused["limit"] == "cost"
    assert refused["measured"] > 20 * refused["maximum"]


async def test_the_service_answers_while_attack_queries_are_refused(seeded: Seeded) -> None:
    attacks = [
        seeded.client.post("/graphql", json={"query": ATTACK.replace("title", f"t{i}: title")})
        for i in range(20)
    ]
    typename = seeded.client.post("/graphql", json={"query": "{ __typename }"})
    *refused, answered = await asyncio.gather(*attacks, typename)
    assert answered.json()["data"] == {"__typename": "Query"}
    for response in refused:
        assert response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"


async def test_a_variable_page_size_is_costed_by_its_value(seeded: Seeded) -> None:
    query = (
        "query($n: Int) { "
        + " ".join(
            NESTED_REPORTS.format(i=i).replace("reports(first: 100)", "reports(first: $n)")
            for i in range(3)
        )
        + " }"
    )
    refused = await _refusal(seeded, query, variables={"n": 100})
    assert refused["limit"] == "cost"
    response = await seeded.client.post(
        "/graphql", json={"query": query, "variables": {"n": 2}}, headers={"x-gateway-cost": "1"}
    )
    body = response.json()
    assert "errors" not in body, body
    assert 0 < body["extensions"]["cost"]["requested"] <= 500_000
    assert body["extensions"]["cost"]["maximum"] == 500_000


async def test_the_defaults_accept_the_documented_and_benchmark_queries() -> None:
    from bench.nested import QUERY as NESTED  # noqa: PLC0415

    readme_queries = [
        re.sub(r"#.*", "", block)
        for block in re.findall(r"```graphql\n(.*?)```", README.read_text(), re.DOTALL)
    ]
    assert readme_queries
    operations = operation_cache()
    for query in (
        *readme_queries,
        NESTED,
        get_introspection_query(descriptions=True, specified_by_url=True),
        "{ technologies(first: 100) { edges { node { reports(first: 100) { edges { node {"
        " title wordCount status authors { author { name } } } } } } } } }",
    ):
        prepared = operations.prepare(query)
        assert not prepared.errors, prepared.errors
        assert 0 < prepared.cost_bound <= Limits().cost


def test_a_null_page_size_is_costed_as_the_default_page() -> None:
    operations = operation_cache()
    costs = {
        operations.prepare(f"{{ reports{arguments} {{ edges {{ node {{ title }} }} }} }}").cost(
            None, None
        )
        for arguments in ("(first: null)", "", f"(first: {DEFAULT_PAGE_SIZE})")
    }
    assert len(costs) == 1


def test_fragments_are_measured_through_their_spreads() -> None:
    document = parse(
        "{ ...A } fragment A on Query { reports { edges { node { ...B } } } }"
        " fragment B on Report { authors { author { name } } }"
    )
    assert measure_shape(document).depth == 6
    assert measure_shape(document).root_fields == 1


def test_a_fragment_cycle_is_measured_and_then_refused_by_validation() -> None:
    query = (
        "{ reports { edges { node { ...A } } } }"
        " fragment A on Report { authors { author { ...B } } }"
        " fragment B on Author { reports { edges { node { ...A } } } }"
    )
    measure_shape(parse(query))  # terminates
    (error,) = operation_cache().prepare(query).errors
    assert "Cannot spread fragment" in error.message


def test_repeated_documents_are_prepared_once() -> None:
    operations = operation_cache()
    first = operations.prepare("{ __typename }")
    assert operations.prepare("{ __typename }") is first


def test_a_cost_is_measured_once_per_set_of_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = operation_cache().prepare(
        "query($n: Int!) { reports(first: $n) { edges { node { title } } } }"
    )
    measured: list[Any] = []

    def measure(*arguments: Any) -> int:
        measured.append(arguments[-1])
        return int(arguments[-1]["n"])

    monkeypatch.setattr("gateway.operations.measure_cost", measure)
    costs = [prepared.cost(None, variables) for variables in ({"n": 5}, {"n": 50}, {"n": 5})]
    assert costs == [5, 50, 5]
    assert measured == [{"n": 5}, {"n": 50}]
    # Integers orjson cannot write are measured every time, not refused.
    assert prepared.cost(None, {"n": 2**70}) == 2**70


def test_the_cache_is_bounded() -> None:
    operations = operation_cache()
    operations._max_documents = 3
    kept = [operations.prepare(f"{{ a{i}: __typename }}") for i in range(5)]
    assert operations.prepare("{ a4: __typename }") is kept[4]
    assert operations.prepare("{ a0: __typename }") is not kept[0]


async def test_bodies_over_the_limit_are_refused_before_they_are_read(seeded: Seeded) -> None:
    huge = b'{"query": "{ __typename }", "variables": {"x": "' + b"x" * 10_000_000 + b'"}}'
    response = await seeded.client.post(
        "/graphql", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"

    async def chunks() -> Any:
        yield b'{"query": "{ __typename }", "x": "'
        for _ in range(100):
            yield b"x" * 100_000
        yield b'"}'

    # No Content-Length: the stream is cut off at the limit.
    streamed = await seeded.client.post(
        "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


async def test_an_operation_past_its_deadline_answers_and_stops_asking_stores(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def slow_leaderboard(**_: Any) -> list[int]:
        calls.append("leaderboard")
        await asyncio.sleep(1.5)  # a hung store, injected
        return [1, 2, 3]

    async def records_by_id(**_: Any) -> list[Any]:
        calls.append("rows")
        return []

    monkeypatch.setattr("core.sources.top_report_ids", slow_leaderboard)
    monkeypatch.setattr("datasources.lookups.records_by_id", records_by_id)
    app = create_app(settings.model_copy(update={"execution_timeout": 0.3}))
    async with lifespan_client(app) as client:
        response = await client.post(
            "/graphql",
            json={"query": "{ topReports(limit: 3) { title } }"},
            headers={"accept": GRAPHQL_RESPONSE},
        )
        assert response.status_code == 504
        (error,) = response.json()["errors"]
        assert error["extensions"]["code"] == "DEADLINE_EXCEEDED"
        assert (await client.get("/healthz")).status_code == 200
        await asyncio.sleep(1.5)
    # The leaderboard call ran to its end; nothing was started after the deadline.
    assert calls == ["leaderboard"]


async def test_operations_past_the_concurrency_limit_wait_their_turn(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    held_leaderboard = HeldStoreCall([])
    events, started, release = (
        held_leaderboard.events,
        held_leaderboard.started,
        held_leaderboard.release,
    )
    monkeypatch.setattr("core.sources.top_report_ids", held_leaderboard)
    # Both execute: no answer from the response cache for the second.
    app = create_app(
        settings.model_copy(update={"max_concurrent_operations": 1, "response_cache": False})
    )
    query = {"query": "{ topReports(limit: 3) { title } }"}
    async with lifespan_client(app) as client:
        first = asyncio.create_task(client.post("/graphql", json=query))
        second = asyncio.create_task(client.post("/graphql", json=query))
        await started.wait()
        await asyncio.sleep(0.2)
        # One operation at a time: the second waits for the first's turn to end.
        assert events == ["started"]
        # Requests that execute nothing take no turn.
        assert (await client.get("/healthz")).status_code == 200
        release.set()
        answers = await asyncio.gather(first, second)
    assert [answer.json()["data"] for answer in answers] == [{"topReports": []}] * 2
    assert events == ["started", "finished", "started", "finished"]


async def test_an_operation_that_waits_longer_than_it_may_run_is_told_the_gateway_is_busy(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaderboard = HeldStoreCall([])
    monkeypatch.setattr("core.sources.top_report_ids", leaderboard)
    # Redis, held, is not taken as hung meanwhile (the first's read waits on, overdue).
    monkeypatch.setattr("core.stores.HUNG_AFTER", 3600.0)
    app = create_app(
        settings.model_copy(
            # Uncached: the second executes, where it would wait for the first's answer.
            update={
                "max_concurrent_operations": 1,
                "execution_timeout": 1.5,
                "response_cache": False,
            }
        )
    )
    hanging = {"query": "{ topReports(limit: 3) { title } }"}
    async with lifespan_client(app) as client:
        # From the moment the first runs: it holds the one turn until its deadline (1.5 s);
        # the second, waiting from 0.5 s, takes it then (it would give up at 2 s) and holds
        # it until the store answers, after the third; the third, waiting from 1 s behind
        # both, gives up at 2.5 s.
        held = [asyncio.create_task(client.post("/graphql", json=hanging))]
        await leaderboard.started.wait()
        await asyncio.sleep(0.5)
        held.append(asyncio.create_task(client.post("/graphql", json=hanging)))
        await asyncio.sleep(0.5)
        busy = await client.post(
            "/graphql",
            json={"query": "{ service { name } }"},
            headers={"accept": GRAPHQL_RESPONSE},
        )
        leaderboard.release.set()
        answers = await asyncio.gather(*held)
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    (error,) = busy.json()["errors"]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    # The first ran to its deadline; the second was answered when the store was.
    assert answers[0].json()["errors"][0]["extensions"]["code"] == "DEADLINE_EXCEEDED"
    assert answers[1].json()["data"] == {"topReports": []}
