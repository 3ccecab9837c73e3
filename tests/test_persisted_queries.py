"""Automatic persisted queries: registered with their hash, then sent by hash alone, over
POST and GET, shared by every process through Redis."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from core.settings import Settings
from datasources.persisted_queries import persisted_query_key
from gateway import cli
from gateway.app import create_app
from tests.clients import lifespan_client, serving
from tests.faults import own_redis

QUERY = "query Kinds { reportTypes { name } }"
GRAPHQL_RESPONSE = "application/graphql-response+json"


def _hash(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def _extensions(digest: str, version: int = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": digest}}


async def _post(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/graphql", json=body)


async def _get(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    encoded = {name: json.dumps(value) if name == "extensions" else value
               for name, value in params.items()}  # fmt: skip
    return await client.get("/graphql", params=encoded)


def _code(response: httpx.Response) -> str:
    errors = response.json()["errors"]
    assert "data" not in response.json()
    code: str = errors[0]["extensions"]["code"]
    return code


async def test_an_unknown_hash_asks_for_the_document(client: httpx.AsyncClient) -> None:
    response = await _post(client, extensions=_extensions(_hash(QUERY)))
    assert response.status_code == 200
    assert _code(response) == "PERSISTED_QUERY_NOT_FOUND"
    strict = await client.post(
        "/graphql",
        json={"extensions": _extensions(_hash(QUERY))},
        headers={"accept": GRAPHQL_RESPONSE},
    )
    assert strict.status_code == 400
    assert _code(strict) == "PERSISTED_QUERY_NOT_FOUND"


@pytest.mark.parametrize("register", [_post, _get], ids=["registered by POST", "by GET"])
@pytest.mark.parametrize("ask", [_post, _get], ids=["asked by POST", "by GET"])
async def test_a_registered_document_is_served_by_its_hash(
    client: httpx.AsyncClient, settings: Settings, register: Any, ask: Any
) -> None:
    whole = await register(client, query=QUERY, extensions=_extensions(_hash(QUERY)))
    assert whole.status_code == 200
    assert "errors" not in whole.json()
    by_hash = await ask(client, extensions=_extensions(_hash(QUERY).upper()))
    assert by_hash.status_code == 200
    assert by_hash.json()["data"] == whole.json()["data"]
    # Another process, with nothing of its own kept, finds it in Redis.
    async with lifespan_client(create_app(settings)) as other:
        elsewhere = await ask(other, extensions=_extensions(_hash(QUERY)), operationName="Kinds")
    assert elsewhere.json()["data"] == whole.json()["data"]


async def test_a_document_that_is_not_its_hash_is_refused_and_not_kept(
    client: httpx.AsyncClient,
) -> None:
    wrong = await _post(client, query=QUERY, extensions=_extensions(_hash("{ __typename }")))
    assert _code(wrong) == "BAD_USER_INPUT"
    assert "SHA-256" in wrong.json()["errors"][0]["message"]
    for digest in (_hash(QUERY), _hash("{ __typename }")):
        assert _code(await _post(client, extensions=_extensions(digest))) == (
            "PERSISTED_QUERY_NOT_FOUND"
        )


async def test_only_documents_that_validate_are_kept(client: httpx.AsyncClient) -> None:
    invalid = "{ reportTypes { nope } }"
    refused = await _post(client, query=invalid, extensions=_extensions(_hash(invalid)))
    assert "nope" in refused.json()["errors"][0]["message"]
    assert _code(await _post(client, extensions=_extensions(_hash(invalid)))) == (
        "PERSISTED_QUERY_NOT_FOUND"
    )


async def test_documents_leave_redis_after_their_time(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await _post(client, query=QUERY, extensions=_extensions(_hash(QUERY)))
    redis = Redis.from_url(str(settings.redis_url))
    try:
        seconds = await redis.ttl(persisted_query_key(_hash(QUERY)))
    finally:
        await redis.aclose()
    assert 0 < seconds <= settings.persisted_query_ttl


@pytest.mark.parametrize(
    "extensions",
    [
        _extensions("ab"),
        _extensions(_hash(QUERY), version=2),
        {"persistedQuery": "abc"},
        {"persistedQuery": {"version": 1}},
    ],
    ids=["short hash", "version 2", "not an object", "no hash"],
)
async def test_malformed_persisted_queries_get_coded_errors(
    client: httpx.AsyncClient, extensions: dict[str, Any]
) -> None:
    response = await _post(client, query=QUERY, extensions=extensions)
    assert response.status_code == 200
    assert _code(response) == "BAD_USER_INPUT"


async def test_a_persisted_mutation_is_not_sent_by_get(client: httpx.AsyncClient) -> None:
    mutation = 'mutation { deleteReport(id: "UmVwb3J0OjE=") { __typename } }'
    await _post(client, query=mutation, extensions=_extensions(_hash(mutation)))
    response = await _get(client, extensions=_extensions(_hash(mutation)))
    assert response.status_code == 405, response.text


async def test_without_redis_whole_documents_are_still_served(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with own_redis(settings, tmp_path / "own") as (own_settings, own):
        async with lifespan_client(create_app(own_settings)) as client:
            own.stop()
            with caplog.at_level(logging.WARNING, logger="gateway.persisted_queries"):
                for document in (QUERY, "{ __typename }", "{ reportTypes { id } }"):
                    digest = _hash(document)
                    by_hash = await _post(client, extensions=_extensions(digest))
                    assert _code(by_hash) == "PERSISTED_QUERY_NOT_FOUND"
                    whole = await _post(client, query=document, extensions=_extensions(digest))
                    assert whole.status_code == 200
                    assert whole.json()["data"]
                    # This process keeps what it met, whether Redis does or not.
                    again = await _post(client, extensions=_extensions(digest))
                    assert again.json()["data"] == whole.json()["data"]
    outages = [record for record in caplog.records if record.name == "gateway.persisted_queries"]
    assert len(outages) == 1


ALLOWED = "query Allowed { reportTypes { name } }"
OTHER = "{ reportTypes { id } }"


@pytest.fixture
def allow_listed(configured: Settings, tmp_path: Path) -> Settings:
    """Settings that accept only the allow-list, which ``gateway persisted add`` filled
    from an Apollo manifest."""
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{"id": _hash(ALLOWED), "name": "Allowed", "type": "query", "body": ALLOWED}],
    }))  # fmt: skip
    assert cli.main(["persisted", "add", str(manifest)]) == 0
    return configured.model_copy(update={"persisted_queries_only": True})


async def test_the_allow_list_serves_its_operations_and_refuses_others(
    allow_listed: Settings,
) -> None:
    async with lifespan_client(create_app(allow_listed)) as client:
        by_hash = await _get(client, extensions=_extensions(_hash(ALLOWED)))
        assert by_hash.json() == {"data": {"reportTypes": []}, "extensions": ANY}
        whole = await _post(client, query=ALLOWED)
        assert whole.json()["data"] == by_hash.json()["data"]
        refused = await _post(client, query=OTHER)
        assert _code(refused) == "PERSISTED_QUERY_NOT_IN_LIST"
        strict = await client.post(
            "/graphql", json={"query": OTHER}, headers={"accept": GRAPHQL_RESPONSE}
        )
        assert strict.status_code == 403
        # A client cannot add to it by registering its own.
        registering = await _post(client, query=OTHER, extensions=_extensions(_hash(OTHER)))
        assert _code(registering) == "PERSISTED_QUERY_NOT_IN_LIST"
        unknown = await _post(client, extensions=_extensions(_hash(OTHER)))
        assert _code(unknown) == "PERSISTED_QUERY_NOT_FOUND"


async def test_the_allow_list_holds_over_websocket(allow_listed: Settings) -> None:
    async with (
        serving(create_app(allow_listed)) as address,
        connect(
            f"ws://{address}/graphql", subprotocols=[Subprotocol("graphql-transport-ws")]
        ) as socket,
    ):
        await socket.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await socket.recv()) == {"type": "connection_ack"}
        await socket.send(json.dumps(
            {"type": "subscribe", "id": "1", "payload": {"query": OTHER}}
        ))  # fmt: skip
        refused = json.loads(await socket.recv())
        assert refused["type"] == "error"
        assert refused["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_LIST"
        await socket.send(json.dumps({"type": "subscribe", "id": "2", "payload": {
            "extensions": _extensions(_hash(ALLOWED)),
        }}))  # fmt: skip
        served = json.loads(await socket.recv())
        assert served["type"] == "next"
        assert served["payload"]["data"] == {"reportTypes": []}


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({_hash(OTHER): ALLOWED}),
        json.dumps({_hash("{ nope }"): "{ nope }"}),
        "[1, 2]",
        "{",
    ],
    ids=["a hash of another document", "invalid document", "not an object", "not JSON"],
)
@pytest.mark.usefixtures("configured")
def test_a_bad_allow_list_adds_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    listed = tmp_path / "list.json"
    listed.write_text(content)
    assert cli.main(["persisted", "add", str(listed)]) == 1
    assert "gateway:" in capsys.readouterr().err
