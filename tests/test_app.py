from __future__ import annotations

import asyncio
import gc
import json
import logging
import subprocess
import sys
from importlib.metadata import entry_points, version

import httpx
import pytest
from sqlalchemy.engine import make_url
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from core import waiting
from core.connections import Connections
from core.settings import Settings
from core.stores import Store, store_name
from gateway import SERVICE_NAME, __version__, collector
from gateway.app import create_app
from gateway.embedded.process import LOOPBACK
from gateway.runtime import UnreachableStoreError
from tests.clients import Caller, lifespan_client, serving
from tests.databases import BACKEND, needs_server, several_hosts
from tests.ports import own_port
from tests.waiting import eventually

SERVICE_QUERY = "{ service { name version environment } }"


async def test_healthz_answers_without_touching_stores(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_every_store_ready(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "stores": {"postgres": "ok", "mongodb": "ok", "redis": "ok"},
        "failing": [],
        "circuits": {"postgres": "closed", "mongodb": "closed", "redis": "closed"},
    }


async def test_service_query_over_post(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": SERVICE_QUERY})
    assert response.status_code == 200
    assert response.json()["data"] == {
        "service": {"name": SERVICE_NAME, "version": __version__, "environment": "development"}
    }


async def test_service_query_over_get(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql", params={"query": SERVICE_QUERY}, headers={"accept": "application/json"}
    )
    assert response.status_code == 200
    assert response.json()["data"]["service"]["name"] == SERVICE_NAME


async def test_browser_get_serves_graphiql(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_syntax_error_is_a_coded_graphql_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ service { "})
    body = response.json()
    assert response.status_code == 200
    assert "data" not in body
    assert body["errors"][0]["message"].startswith("Syntax Error")
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_unknown_field_is_a_coded_graphql_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ service { nme } }"})
    error = response.json()["errors"][0]
    assert "Did you mean 'name'?" in error["message"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_malformed_body_is_a_client_error_not_a_crash(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=b'{"query":', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "Traceback" not in response.text


async def test_websocket_endpoint_speaks_graphql_transport_ws(settings: Settings) -> None:
    async with serving(create_app(settings)) as address:
        protocols = [Subprotocol("graphql-transport-ws")]
        async with connect(f"ws://{address}/graphql", subprotocols=protocols) as socket:
            await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await socket.recv()) == {"type": "connection_ack"}
            await socket.send(json.dumps({"type": "ping"}))
            assert json.loads(await socket.recv())["type"] == "pong"


async def test_a_started_gateway_runs_the_cycle_collector_rarely(client: httpx.AsyncClient) -> None:
    assert gc.get_threshold() == collector.THRESHOLDS
    assert gc.get_freeze_count() > 0


def test_the_gateway_s_programs_import_the_application_with_the_collector_off() -> None:
    # In a new interpreter, as the gateway command and the workers' template import it.
    program = """
import gc, json
from gateway.collector import frozen_imports
passes = [generation["collections"] for generation in gc.get_stats()]
with frozen_imports():
    import gateway.app
print(json.dumps({
    "passes": [generation["collections"] for generation in gc.get_stats()] == passes,
    "enabled": gc.isenabled(),
    "frozen": gc.get_freeze_count(),
    "in_sight": len(gc.get_objects()),
}))
"""
    imported = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    measured = json.loads(imported.stdout)
    assert measured["passes"], "the collector ran while the application was imported"
    assert measured["enabled"]
    # Everything the imports made is out of the collector's sight; the few objects left
    # are what the print itself made.
    assert measured["frozen"] > 100_000
    assert measured["in_sight"] < 100
    [command] = entry_points(group="console_scripts", name="gateway")
    assert command.value == "gateway.__main__:main"


async def test_the_young_generation_is_collected_on_a_schedule_while_feeds_run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    collected: list[int] = []
    ticks: list[float] = []
    set_within = waiting.set_within

    def collect(generation: int = 2) -> int:
        collected.append(generation)
        return 0

    async def ticking(stop: asyncio.Event, seconds: float) -> bool:
        ticks.append(seconds)
        return await set_within(stop, seconds)

    monkeypatch.setattr(collector, "YOUNG_EVERY", 0.001)
    monkeypatch.setattr(collector, "set_within", ticking)
    monkeypatch.setattr(gc, "collect", collect)

    async def ticked() -> bool:
        return len(ticks) >= 5

    async def scheduled() -> bool:
        return collected.count(0) >= 3

    async with serving(create_app(settings)) as address:
        await eventually(ticked)
        assert 0 not in collected  # no feed: requests leave no churn to collect
        protocols = [Subprotocol("graphql-transport-ws")]
        async with connect(f"ws://{address}/graphql", subprotocols=protocols) as socket:
            await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await socket.recv()) == {"type": "connection_ack"}
            board = {"query": "subscription { topReports(limit: 3) { databaseId } }"}
            await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": board}))
            assert json.loads(await socket.recv())["type"] == "next"
            await eventually(scheduled)


async def test_a_postgresql_url_of_several_hosts_is_served_by_the_one_that_takes_writes(
    call: Caller, settings: Settings
) -> None:
    """A primary and its standbys in one URL, as asyncpg takes them: the gateway connects to
    the first host that answers and takes writes, here past one where nothing listens."""
    url = make_url(str(settings.database_url))
    if url.get_backend_name() != "postgresql":
        pytest.skip("several hosts in one URL are PostgreSQL's")
    several = several_hosts(
        str(settings.database_url), [f"{LOOPBACK}:{own_port()}", f"{url.host}:{url.port}"]
    )
    async with lifespan_client(
        create_app(settings.model_copy(update={"database_url": several}))
    ) as client:
        read = await client.post("/graphql", json={"query": "{ institutions { totalCount } }"})
        assert read.json()["data"]["institutions"]["totalCount"] > 0
        written = await client.post(
            "/graphql",
            json={
                "query": 'mutation { createInstitution(input: {name: "Standby Lab"})'
                " { __typename } }"
            },
            headers={"authorization": f"Bearer {call.keys['editor']}"},
        )
        assert written.json()["data"] == {"createInstitution": {"__typename": "InstitutionSaved"}}


async def test_redis_is_told_which_gateway_each_connection_is(connections: Connections) -> None:
    """The server's list of clients names the gateway and its version beside the driver's,
    so that an operator tells the gateway's connections from others'."""
    await connections.redis.ping()
    named = await connections.redis.client_info()
    if "lib-name" not in named:
        pytest.skip("Redis keeps clients' names from 7.2 on")
    assert named["lib-name"] == f"redis-py({SERVICE_NAME}_v{__version__})"
    assert named["lib-ver"] == version("redis")


async def test_a_shutdown_logs_no_state_of_the_pools(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A pool's dispose is SQLAlchemy's to log, at a level its own pools keep quiet."""
    caplog.set_level(logging.INFO)
    async with lifespan_client(create_app(settings)) as client:
        assert (
            await client.post("/graphql", json={"query": "{ institutions { totalCount } }"})
        ).status_code == 200
    assert [
        record.getMessage() for record in caplog.records if record.name.startswith("core.pools")
    ] == []


async def test_background_work_that_fails_is_logged_and_the_shutdown_goes_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError("a bug in background work")

    copies: list[float] = []

    async def copy_counters(_: Connections, within: float) -> None:
        copies.append(within)

    monkeypatch.setattr("gateway.app.collect_young_generation", broken)
    monkeypatch.setattr("gateway.app.snapshot_counters_now", copy_counters)
    caplog.set_level(logging.ERROR, logger="gateway.app")
    async with lifespan_client(create_app(settings)) as client:
        # Logged as it fails, not when the gateway stops.
        async def logged() -> bool:
            return "background work stopped" in caplog.messages

        await eventually(logged, instead=lambda: caplog.messages)
        assert "a bug in background work" in caplog.text
        assert (await client.get("/healthz")).status_code == 200
    # The shutdown's own steps still ran: the counters' last copy among them.
    assert copies == [settings.shutdown_timeout]


@needs_server("a file always answers")
async def test_a_gateway_that_cannot_reach_its_database_to_migrate_says_why_in_one_line(
    settings: Settings,
) -> None:
    """In development, start-up applies the migrations: where the database does not
    answer, what stops the start says so, with the driver's reason and none of its frames."""
    unreachable = make_url(str(settings.database_url)).set(host=LOOPBACK, port=own_port())
    application = create_app(
        settings.model_copy(
            update={"database_url": unreachable.render_as_string(hide_password=False)}
        )
    )
    with pytest.raises(UnreachableStoreError) as stopped:
        async with lifespan_client(application):
            pass
    message = str(stopped.value)
    name = store_name(Store.POSTGRES, BACKEND)
    where = f"{LOOPBACK}:{unreachable.port}"
    assert message.startswith(f"cannot apply migrations: {name} at {where} does not answer (")
    assert stopped.value.__suppress_context__
