"""GraphQL over HTTP: media types and status codes, JSON errors for every mistake, methods,
and the same coded, masked errors over WebSocket."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from core.settings import Settings
from gateway.app import create_app
from tests.clients import Seeded, lifespan_client, serving

GRAPHQL_RESPONSE = "application/graphql-response+json"
TYPENAME = {"query": "{ __typename }"}
INTERNALS = ("Traceback", "SELECT", "sqlalchemy", "asyncpg", "site-packages", "secret-detail")


def _json_error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].split(";")[0] in ("application/json", GRAPHQL_RESPONSE)
    body: dict[str, Any] = response.json()
    assert "data" not in body
    (error,) = body["errors"]
    assert error["extensions"]["code"], error
    return dict(error)


async def test_graphql_response_json_when_accepted(seeded: Seeded) -> None:
    response = await seeded.client.post(
        "/graphql", json=TYPENAME, headers={"accept": GRAPHQL_RESPONSE}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert response.json()["data"] == {"__typename": "Query"}


@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", f"application/json, {GRAPHQL_RESPONSE};q=0.5"]
)
async def test_older_clients_get_application_json(seeded: Seeded, accept: str | None) -> None:
    headers = {"accept": accept} if accept else {}
    response = await seeded.client.post("/graphql", json=TYPENAME, headers=headers)
    assert response.headers["content-type"] == "application/json; charset=utf-8"


async def test_an_unacceptable_media_type_is_406(seeded: Seeded) -> None:
    response = await seeded.client.post("/graphql", json=TYPENAME, headers={"accept": "text/csv"})
    assert response.status_code == 406
    _json_error(response)


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        ("{ reports(", None),
        ("{ nope }", None),
        ("query($n: Int) { reports(first: $n) { totalCount } }", {"n": "abc"}),
        ("query($n: Int!) { reports(first: $n) { totalCount } }", {}),
        ("query($n: Int) { reports(first: $n) { totalCount } }", {"n": 1.5}),
        ("query A { __typename } query B { __typename }", None),
    ],
    ids=[
        "syntax",
        "validation",
        "string for Int",
        "missing non-null",
        "float for Int",
        "two operations",
    ],
)
async def test_request_errors_are_400_without_data_or_200_for_older_clients(
    seeded: Seeded,
    document: str,
    variables: dict[str, Any] | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = {"query": document, "variables": variables}
    with caplog.at_level(logging.ERROR):
        modern = await seeded.client.post(
            "/graphql", json=body, headers={"accept": GRAPHQL_RESPONSE}
        )
        older = await seeded.client.post("/graphql", json=body)
    assert modern.status_code == 400
    assert older.status_code == 200
    for response in (modern, older):
        assert _json_error(response)["extensions"]["code"] == "BAD_USER_INPUT"
    assert "Traceback" not in caplog.text  # a client's mistake is not the server's error


async def test_an_unknown_operation_name_is_a_request_error(seeded: Seeded) -> None:
    response = await seeded.client.post(
        "/graphql",
        json={**TYPENAME, "operationName": "Missing"},
        headers={"accept": GRAPHQL_RESPONSE},
    )
    assert response.status_code == 400
    assert "Missing" in _json_error(response)["message"]


async def test_the_named_operation_runs(seeded: Seeded) -> None:
    response = await seeded.client.post(
        "/graphql",
        json={"query": "query A { a: __typename } query B { b: __typename }", "operationName": "B"},
    )
    assert response.json()["data"] == {"b": "Query"}


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"query":', "application/json", 400),
        (b'[{"query": "{ __typename }"}]', "application/json", 400),
        (b'"{ __typename }"', "application/json", 400),
        (b'{"query": 1}', "application/json", 400),
        (b'{"query": "{ __typename }", "variables": [1]}', "application/json", 400),
        (b'{"query": "{ __typename }", "variables": "{}"}', "application/json", 400),
        (b'{"query": "{ __typename }", "operationName": 3}', "application/json", 400),
        (b'{"query": "{ __typename }", "extensions": 3}', "application/json", 400),
        (b"{}", "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b"query=%7B__typename%7D", "application/x-www-form-urlencoded", 415),
        (b'{"query": "{ __typename }"}', "text/plain", 415),
        (b'{"query": "{ __typename }"}', "application/json; charset=latin-1", 415),
        (b"{ __typename }", "application/graphql", 415),
    ],
    ids=[
        "malformed JSON", "batched array", "a string", "query not a string", "variables a list",
        "variables a string", "operationName a number", "extensions a number",
        "no query", "not UTF-8", "form", "text/plain", "latin-1",
        "application/graphql",
    ],
)  # fmt: skip
async def test_malformed_requests_get_json_errors(
    seeded: Seeded, content: bytes, content_type: str, status: int
) -> None:
    response = await seeded.client.post(
        "/graphql", content=content, headers={"content-type": content_type}
    )
    assert response.status_code == status
    _json_error(response)


async def test_queries_run_over_get_with_json_variables(seeded: Seeded) -> None:
    response = await seeded.client.get(
        "/graphql",
        params={
            "query": "query($n: Int) { reports(first: $n) { edges { node { title } } } }",
            "variables": json.dumps({"n": 2}),
        },
    )
    assert len(response.json()["data"]["reports"]["edges"]) == 2


async def test_a_get_without_a_query_is_a_json_error(seeded: Seeded) -> None:
    response = await seeded.client.get("/graphql", headers={"accept": "application/json"})
    assert response.status_code == 400
    _json_error(response)


async def test_a_mutation_over_get_is_405_and_changes_nothing(seeded: Seeded) -> None:
    report_id = (await seeded.data("{ reports(first: 1) { edges { node { id } } } }"))["reports"][
        "edges"
    ][0]["node"]["id"]
    stats = "query($id: ID!) { report(id: $id) { stats { views } } }"
    before = await seeded.data(stats, {"id": report_id})
    response = await seeded.client.get(
        "/graphql",
        params={"query": f'mutation {{ recordView(reportId: "{report_id}") {{ __typename }} }}'},
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    _json_error(response)
    assert await seeded.data(stats, {"id": report_id}) == before


async def test_head_answers_like_get_without_a_body(seeded: Seeded) -> None:
    response = await seeded.client.head("/graphql", params=TYPENAME)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405_with_allow(seeded: Seeded, method: str) -> None:
    response = await seeded.client.request(method, "/graphql", json=TYPENAME)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    _json_error(response)


async def test_a_subscription_over_http_is_refused(seeded: Seeded) -> None:
    response = await seeded.client.post(
        "/graphql",
        json={"query": "subscription { __typename }"},
        headers={"accept": GRAPHQL_RESPONSE},
    )
    assert response.status_code == 400
    _json_error(response)


async def test_unknown_paths_answer_in_json(seeded: Seeded) -> None:
    response = await seeded.client.get("/nowhere")
    assert response.status_code == 404
    _json_error(response)


async def test_every_response_carries_a_request_id(seeded: Seeded) -> None:
    response = await seeded.client.post("/graphql", json=TYPENAME)
    assert len(response.headers["x-request-id"]) == 32
    given = await seeded.client.post("/graphql", json=TYPENAME, headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    forged = await seeded.client.post(
        "/graphql", json=TYPENAME, headers={"x-request-id": "a b\tlevel=error forged"}
    )
    assert len(forged.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    "document",
    [
        '{ reports(first: 1, filter: {search: "a\\u0000b"}) { totalCount } }',
        '{ reports(first: 1, filter: {search: "\\ud800"}) { totalCount } }',
    ],
    ids=["NUL", "lone surrogate"],
)
async def test_text_no_store_can_hold_is_bad_user_input(seeded: Seeded, document: str) -> None:
    literal = await seeded.client.post("/graphql", json={"query": document})
    assert _json_error(literal)["extensions"]["code"] == "BAD_USER_INPUT"
    variable = await seeded.client.post(
        "/graphql",
        content=b'{"query": "query($s: String) { reports(first: 1, filter: {search: $s}) '
        b'{ totalCount } }", "variables": {"s": "a\\u0000b", "x": {"k\\ud800": 1}}}',
        headers={"content-type": "application/json"},
    )
    errors = variable.json()["errors"]
    assert [error["extensions"]["code"] for error in errors] == ["BAD_USER_INPUT"] * 2
    assert [error["message"].split(":")[0] for error in errors] == [
        "variable $s",
        "variable $x.k\ud800",
    ]


async def test_long_inputs_are_not_echoed_in_full(seeded: Seeded) -> None:
    response = await seeded.client.post(
        "/graphql",
        json={
            "query": "query($n: Int) { reports(first: $n) { totalCount } }",
            "variables": {"n": "9" * 1_000_000},
        },
    )
    assert len(response.content) < 2000
    assert _json_error(response)["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.fixture
def broken_leaderboard(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(**_: Any) -> list[int]:
        # A fault injected on purpose: what a driver's error may carry.
        raise RuntimeError("SELECT secret-detail FROM reports WHERE id = $1 (asyncpg)")

    monkeypatch.setattr("core.sources.top_report_ids", failing)


async def test_unexpected_errors_are_masked_over_http_with_the_logged_request_id(
    settings: Settings, broken_leaderboard: None, caplog: pytest.LogCaptureFixture
) -> None:
    async with lifespan_client(create_app(settings)) as client:
        with caplog.at_level(logging.ERROR, logger="core.errors"):
            response = await client.post("/graphql", json={"query": "{ topReports { id } }"})
    (error,) = response.json()["errors"]
    assert error["message"] == "Internal server error"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]
    assert not any(word in response.text for word in INTERNALS)
    assert response.headers["x-request-id"] in caplog.text
    assert "secret-detail" in caplog.text


DOCUMENTS: dict[str, str | None] = {
    "internal": "{ topReports { id } }",
    "nul": '{ reports(first: 1, filter: {search: "a\\u0000b"}) { totalCount } }',
    "invalid": "{ nope }",
    "coercion": "query($n: Int!) { reports(first: $n) { totalCount } }",
    "too deep": "{ reports { edges { node { authors { author { reports { edges { node {"
    " authors { author { reports { edges { node { title } } } } } } } } } } } } } }",
    "two operations": 'query A { __typename } mutation B { recordView(reportId: "1") {'
    " __typename } }",
    "no query": None,
}


async def _codes_over_websocket(settings: Settings, protocol: str) -> dict[str, str]:
    start, result = (
        ("subscribe", "next") if protocol == "graphql-transport-ws" else ("start", "data")
    )
    codes: dict[str, str] = {}
    async with (
        serving(create_app(settings)) as address,
        connect(f"ws://{address}/graphql", subprotocols=[Subprotocol(protocol)]) as socket,
    ):
        await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        for name, document in DOCUMENTS.items():
            await socket.send(
                json.dumps({"id": name, "type": start, "payload": {"query": document}})
            )
            message = json.loads(await socket.recv())
            while message["type"] in ("ka", "complete"):  # keep-alives, earlier operations
                message = json.loads(await socket.recv())
            assert message["type"] in (result, "error"), message
            assert not any(word in json.dumps(message) for word in INTERNALS), message
            payload = message["payload"]
            # graphql-transport-ws sends a list of errors; graphql-ws one error, or a result.
            errors = payload if isinstance(payload, list) else payload.get("errors", [payload])
            codes[name] = errors[0]["extensions"]["code"]
    return codes


async def test_errors_over_graphql_transport_ws_are_coded_and_masked(
    settings: Settings, broken_leaderboard: None
) -> None:
    assert await _codes_over_websocket(settings, "graphql-transport-ws") == {
        "internal": "INTERNAL_SERVER_ERROR",
        "nul": "BAD_USER_INPUT",
        "invalid": "BAD_USER_INPUT",
        "coercion": "BAD_USER_INPUT",
        "too deep": "QUERY_TOO_COMPLEX",
        "two operations": "BAD_USER_INPUT",
        "no query": "BAD_USER_INPUT",
    }


async def test_errors_over_the_older_graphql_ws_are_coded(
    settings: Settings, broken_leaderboard: None
) -> None:
    # That protocol runs subscriptions only: queries are refused as such, with a code.
    codes = await _codes_over_websocket(settings, "graphql-ws")
    assert set(codes.values()) <= {"BAD_USER_INPUT", "QUERY_TOO_COMPLEX"}


@pytest.mark.parametrize(
    "message",
    [
        [1, 2],
        "subscribe",
        {"type": "subscribe", "id": "1", "payload": "{ __typename }"},
        {"type": "subscribe", "id": "1", "payload": {"query": ["{ __typename }"]}},
    ],
    ids=["a list", "a string", "a string payload", "a query that is not a string"],
)
async def test_a_malformed_websocket_message_closes_with_4400(
    settings: Settings, message: object
) -> None:
    async with serving(create_app(settings)) as address:
        protocols = [Subprotocol("graphql-transport-ws")]
        async with connect(f"ws://{address}/graphql", subprotocols=protocols) as socket:
            await socket.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await socket.recv())["type"] == "connection_ack"
            await socket.send(json.dumps(message))
            await socket.wait_closed()
            assert socket.close_code == 4400
        async with connect(f"ws://{address}/graphql", subprotocols=protocols) as socket:
            await socket.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await socket.recv())["type"] == "connection_ack"
