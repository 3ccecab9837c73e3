"""Bad input and failing stores: coded errors, partial data, never a 500."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url, text
from starlette.applications import Starlette

from core.connections import Connections, open_connections
from core.settings import Settings
from core.store_urls import StoreUrls
from datasources import document_migrations
from gateway.app import create_app
from gateway.embedded import EmbeddedStores
from gateway.seed import seed
from resolvers.nodes import to_global_id
from tests.clients import Seeded, lifespan_client
from tests.databases import BACKEND, SERVER_CONNECTIONS, needs_server
from tests.test_reports import PAGE


async def _error(seeded: Seeded, document: str, variables: dict[str, Any] | None = None) -> Any:
    result = await seeded.query(document, variables)
    assert result.get("errors"), result
    return result["errors"][0]


def _cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize(
    ("variables", "argument"),
    [
        ({"first": 1000}, "first"),
        ({"first": -1}, "first"),
        ({"last": 101}, "last"),
        ({"first": 5, "last": 5}, "last"),
        ({"first": 5, "after": "not a cursor"}, "after"),
        ({"last": 5, "before": "bm90IGpzb24"}, "before"),
        ({"first": 5, "after": _cursor(["reports:title:asc", "x", 1])}, "after"),
        ({"first": 5, "after": _cursor(["reports:publication_date:desc", "never", 1])}, "after"),
        (
            {"first": 5, "after": _cursor(["reports:publication_date:desc", "2020-01-01", "1"])},
            "after",
        ),
        ({"filter": {"authorIds": [to_global_id("Report", 1)]}}, "authorIds"),
        ({"filter": {"typeIds": ["%%%"]}}, "id"),
        ({"filter": {"search": "x" * 201}}, "search"),
        ({"filter": {"tags": [f"t{i}" for i in range(101)]}}, "tags"),
    ],
)
async def test_bad_arguments_are_bad_user_input(
    seeded: Seeded, variables: dict[str, Any], argument: str
) -> None:
    error = await _error(seeded, PAGE, variables)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == argument
    assert error["path"] == ["reports"]


async def test_a_cursor_of_another_list_is_refused(seeded: Seeded) -> None:
    authors = await seeded.data("{ authors(first: 1) { pageInfo { endCursor } } }")
    error = await _error(
        seeded, PAGE, {"first": 5, "after": authors["authors"]["pageInfo"]["endCursor"]}
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    "document",
    [
        '{ reports(first: "ten") { totalCount } }',
        "{ reports(orderBy: {field: POPULARITY}) { totalCount } }",
        "{ reports { edges { node { secret } } } }",
        "{ report(id: 5) }",
        "query { reports(first: 5) {",
    ],
)
async def test_malformed_documents_are_bad_user_input(seeded: Seeded, document: str) -> None:
    error = await _error(seeded, document)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_malformed_ids_are_refused_and_wrong_types_too(seeded: Seeded) -> None:
    error = await _error(seeded, '{ report(id: "!!") { title } }')
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "id"}
    wrong = await _error(seeded, f'{{ report(id: "{to_global_id("Author", 1)}") {{ title }} }}')
    assert wrong["extensions"]["code"] == "BAD_USER_INPUT"
    assert (await seeded.data(f'{{ node(id: "{to_global_id("Nothing", 1)}") {{ id }} }}')) == {
        "node": None
    }


@pytest.mark.parametrize(
    "hostile",
    ["'); DROP TABLE reports; --", "' OR 1=1 --", '"; SELECT pg_sleep(10); --', "\\x00", "%_%"],
)
async def test_injection_attempts_in_search_and_tags_are_just_text(
    seeded: Seeded, hostile: str
) -> None:
    data = await seeded.data(
        "query($f: ReportFilterInput) { reports(filter: $f) { totalCount } }",
        {"f": {"search": hostile, "tags": [hostile, "$where", '{"$gt": ""}']}},
    )
    assert data["reports"]["totalCount"] == 0
    assert (await seeded.sql("SELECT count(*) FROM reports"))[0][0] == 400


async def test_nested_page_arguments_are_checked_too(seeded: Seeded) -> None:
    error = await _error(
        seeded, "{ authors(first: 2) { edges { node { reports(first: 500) { totalCount } } } } }"
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["path"][-1] == "reports"


async def test_pages_stay_whole_while_reports_are_inserted(
    connections: Connections, client: httpx.AsyncClient
) -> None:
    await seed(connections, reports=120, progress=False)
    async with connections.engine.connect() as connection:
        original = [
            row.id
            for row in await connection.execute(
                text("SELECT id FROM reports ORDER BY publication_date DESC, id DESC")
            )
        ]
    seen: list[int] = []
    cursor = None
    while True:
        response = await client.post(
            "/graphql", json={"query": PAGE, "variables": {"first": 25, "after": cursor}}
        )
        connection_ = response.json()["data"]["reports"]
        seen += [edge["node"]["databaseId"] for edge in connection_["edges"]]
        # Between pages: one report newer than anything (before the position already
        # reached, so never listed) and one older (after the end, so listed last).
        async with connections.engine.begin() as connection:
            for published in (date(2099, 1, 1), date(1990, 1, 1)):
                await connection.execute(
                    text(
                        "INSERT INTO reports (title, report_type_id, publication_date)"
                        " VALUES ('inserted', 1, :published)"
                    ),
                    {"published": published},
                )
        if not connection_["pageInfo"]["hasNextPage"]:
            break
        cursor = connection_["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen))
    assert [report_id for report_id in seen if report_id in set(original)] == original
    inserted_and_listed = [report_id for report_id in seen if report_id not in set(original)]
    assert inserted_and_listed == sorted(inserted_and_listed, reverse=True)
    assert seen[: len(original)] == original


@pytest.fixture(params=["mongodb", "redis"])
async def failing_store(
    request: pytest.FixtureRequest, connections: Connections, settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[str, httpx.AsyncClient, EmbeddedStores]]:
    """A seeded catalogue whose MongoDB or Redis runs on a server of its own, to be failed."""
    field = {"mongodb": "mongo_url", "redis": "redis_url"}[request.param]
    wanted = StoreUrls(settings.database_url, settings.mongo_url, settings.redis_url)
    with EmbeddedStores(tmp_path / "own", StoreUrls(**{**wanted.__dict__, field: None})) as own:
        urls = own.start()
        # Every request reaches the stores: no answer from the response cache.
        own_settings = settings.model_copy(
            update={field: getattr(urls, field), "store_timeout": 1.0, "response_cache": False}
        )
        stores = open_connections(own_settings, urls)
        await document_migrations.upgrade(stores.documents)
        await seed(stores, reports=30, progress=False)
        await stores.close()
        async with lifespan_client(create_app(own_settings)) as client:
            yield request.param, client, own


DEGRADABLE = """{
  reports(first: 10) { totalCount edges { node { title document { tags } stats { views } } } }
  topReports(limit: 3) { title }
}"""


def _check_partial(body: dict[str, Any], store: str) -> None:
    reports = body["data"]["reports"]
    assert reports["totalCount"] == 30
    nodes = [edge["node"] for edge in reports["edges"]]
    assert all(node["title"] for node in nodes)
    field = {"mongodb": "document", "redis": "stats"}[store]
    assert all(node[field] is None for node in nodes)
    errors = body["errors"]
    assert errors
    assert {error["extensions"]["code"] for error in errors} == {"SERVICE_UNAVAILABLE"}
    assert {error["extensions"]["store"] for error in errors} == {store}
    paths = [error["path"] for error in errors]
    assert ["reports", "edges", 0, "node", field] in paths
    if store == "redis":
        assert body["data"]["topReports"] is None
        assert ["topReports"] in paths
    else:
        assert len(body["data"]["topReports"]) == 3


async def test_a_stopped_store_gives_partial_data_with_coded_errors(
    failing_store: tuple[str, httpx.AsyncClient, EmbeddedStores],
) -> None:
    store, client, own = failing_store
    healthy = (await client.post("/graphql", json={"query": DEGRADABLE})).json()
    assert "errors" not in healthy
    own.stop()
    response = await client.post("/graphql", json={"query": DEGRADABLE})
    assert response.status_code == 200
    _check_partial(response.json(), store)


async def test_a_hung_store_cannot_hang_a_request(
    failing_store: tuple[str, httpx.AsyncClient, EmbeddedStores],
) -> None:
    store, client, own = failing_store
    (server,) = own.servers
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        response = await client.post("/graphql", json={"query": DEGRADABLE})
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    _check_partial(response.json(), store)


# Three reports, read on a gateway whose pools hold one connection each.
READ_OF_THREE = {"query": "{ reports(first: 3) { edges { node { title type { name } } } } }"}


@asynccontextmanager
async def _read_on_one_connection(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """A gateway whose pools hold one connection each, once it has read the three
    reports."""
    monkeypatch.setattr("core.connections.POSTGRES_POOL_SIZE", 1)
    monkeypatch.setattr("datasources.sqlite_dialect.READERS", 1)
    # Supervised: no reconciliation at start-up, which could be the one to meet a broken
    # connection on the pool's only one, instead of the read.
    app = create_app(settings.model_copy(update={"response_cache": False}), supervised=True)
    async with lifespan_client(app) as client:
        assert "errors" not in (await client.post("/graphql", json=READ_OF_THREE)).json()
        yield app, client


async def _read_fails_as_the_store_unavailable(client: httpx.AsyncClient) -> None:
    failed = await client.post("/graphql", json=READ_OF_THREE)
    assert failed.status_code == 200
    errors = failed.json()["errors"]
    assert {error["extensions"]["code"] for error in errors} == {"SERVICE_UNAVAILABLE"}
    assert {error["extensions"]["store"] for error in errors} == {"postgres"}


async def _read_succeeds(client: httpx.AsyncClient) -> None:
    again = (await client.post("/graphql", json=READ_OF_THREE)).json()
    assert "errors" not in again
    assert len(again["data"]["reports"]["edges"]) == 3


@needs_server("no connection of its own to drop")
async def test_a_connection_the_server_dropped_fails_one_read_and_is_replaced(
    connections: Connections, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads go to the driver directly (datasources/driver_reads.py): a pooled connection
    whose server process is gone fails its statement as the store being unavailable, and
    the pool replaces it."""
    await seed(connections, reports=3, progress=False)
    async with _read_on_one_connection(settings, monkeypatch) as (app, client):
        own, ended, listed = SERVER_CONNECTIONS[connections.engine.dialect.name]
        async with app.state.connections.reader.connect() as pooled:
            pid = (await pooled.execute(text(own))).scalar_one()
        async with connections.engine.connect() as other:
            await other.execute(text(ended), {"pid": pid})
            # The signal is sent, not waited for: until the backend is gone it may answer.
            gone = text(listed)
            for _ in range(500):
                if not (await other.execute(gone, {"pid": pid})).scalar_one():
                    break
                await asyncio.sleep(0.01)
        await _read_fails_as_the_store_unavailable(client)
        await _read_succeeds(client)


@pytest.mark.skipif(BACKEND != "sqlite", reason="a thread of its own is SQLite's driver's")
async def test_a_sqlite_connection_whose_thread_stopped_fails_one_read_and_is_replaced(
    connections: Connections, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's driver runs each connection on a thread of its own: a pooled connection
    whose thread has stopped fails the read sent to it directly as the store being
    unavailable, and the pool replaces it."""
    await seed(connections, reports=3, progress=False)
    async with _read_on_one_connection(settings, monkeypatch) as (app, client):
        async with app.state.connections.reader.connect() as pooled:
            await (await pooled.get_raw_connection()).driver_connection.close()
        await _read_fails_as_the_store_unavailable(client)
        await _read_succeeds(client)


@pytest.mark.skipif(BACKEND != "sqlite", reason="a file is SQLite's")
async def test_a_sqlite_file_that_cannot_be_opened_fails_reads_as_the_store_unavailable(
    connections: Connections, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A read sent to the driver directly takes its connection from the pool itself: a
    connection that cannot be made fails the read as the store being unavailable."""
    await seed(connections, reports=3, progress=False)
    assert settings.database_url is not None
    source = make_url(settings.database_url)
    assert source.database is not None
    own = tmp_path / "own"
    own.mkdir()
    shutil.copy(source.database, own / "catalogue.db")
    copied = source.set(database=str(own / "catalogue.db")).render_as_string()
    elsewhere = settings.model_copy(update={"database_url": copied})
    async with _read_on_one_connection(elsewhere, monkeypatch) as (app, client):
        await app.state.connections.reader.dispose()
        shutil.rmtree(own)
        await _read_fails_as_the_store_unavailable(client)
