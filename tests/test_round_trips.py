"""Round trips depend on a query's shape, never on how many rows it returns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import text

from core.connections import Connections, open_connections, redis_pool
from core.settings import Environment, Settings
from core.store_urls import StoreUrls
from datasources import lookups
from datasources.instrumentation import RoundTrips, current_round_trips
from datasources.records import REPORT_TYPES
from datasources.sqlite_dialect import READERS
from gateway.app import create_app
from gateway.embedded.valkey import ValkeyServer
from gateway.seed import TAGS
from tests.clients import Seeded, lifespan_client
from tests.databases import BACKEND
from tests.factories import make_catalogue

NESTED = """
query Nested($first: Int!) {
  reports(first: $first) {
    totalCount
    edges { node {
      title
      type { name }
      authors { isPrimary author { name institution { name country } } }
      primaryAuthor { name }
      technologies { name version }
      document { tags sections { heading } metadata }
      stats { views downloads }
    } }
  }
}
"""


async def _round_trips(seeded: Seeded, document: str, **variables: int) -> dict[str, int]:
    result = await seeded.query(document, variables)
    assert "errors" not in result, result["errors"]
    round_trips: dict[str, int] = result["extensions"]["roundTrips"]
    return round_trips


async def test_three_level_query_costs_the_same_for_1_10_and_100_reports(seeded: Seeded) -> None:
    costs = [await _round_trips(seeded, NESTED, first=size) for size in (1, 10, 100)]
    assert costs[0] == costs[1] == costs[2]
    # reports page (with their types and their count), authorships (with authors),
    # institutions, technologies; one $in for the documents; one pipeline for the counters.
    assert costs[0] == {"postgres": 4, "mongodb": 1, "redis": 1}


NESTED_LISTS = """
query Lists($outer: Int!, $inner: Int!) {
  authors(first: $outer) {
    edges { node { name reports(first: $inner) { edges { node { title } } } } }
  }
}
"""


@pytest.mark.parametrize(("outer", "inner"), [(1, 1), (10, 5), (50, 5), (100, 20)])
async def test_a_paginated_list_under_a_list_is_one_query_per_level(
    seeded: Seeded, outer: int, inner: int
) -> None:
    assert await _round_trips(seeded, NESTED_LISTS, outer=outer, inner=inner) == {
        "postgres": 2, "mongodb": 0, "redis": 0,
    }  # fmt: skip


async def test_three_levels_of_paginated_lists_with_counts(seeded: Seeded) -> None:
    document = """{
      institutions(first: 10) { totalCount edges { node {
        authors(first: 10) { totalCount edges { node {
          reports(first: 3) { totalCount edges { node { title } } }
        } } }
      } } }
      technologies(first: 10) { edges { node {
        reports(first: 2) { totalCount edges { node { title } } } } } }
      reportTypes { reports(first: 2) { edges { node { title } } } }
    }"""
    # A page query per list, and a count query per list under a list that asks for
    # totalCount; a root list's page carries its count.
    assert await _round_trips(seeded, document) == {"postgres": 10, "mongodb": 0, "redis": 0}


async def test_a_store_answers_many_documents_in_one_round_trip(seeded: Seeded) -> None:
    """However many reports carry the tags asked for, and however many reports' documents a
    level reads: one MongoDB command each, not one per batch of the server's default size
    (MongoDB's first is 101 documents)."""
    tagged = await seeded.query(
        "query($tags: [String!]) { reports(filter: {tags: $tags}) { totalCount } }",
        {"tags": list(TAGS)},
        **{"x-gateway-round-trips": "1"},
    )
    assert tagged["data"]["reports"]["totalCount"] > 101
    assert tagged["extensions"]["roundTrips"] == {"postgres": 1, "mongodb": 1, "redis": 0}
    documents = """{ technologies(first: 30) { edges { node {
      reports(first: 10) { edges { node { databaseId document { tags } } } } } } } }"""
    found = await seeded.query(documents, None, **{"x-gateway-round-trips": "1"})
    read = {
        report["node"]["databaseId"]
        for technology in found["data"]["technologies"]["edges"]
        for report in technology["node"]["reports"]["edges"]
    }
    assert len(read) > 101
    assert found["extensions"]["roundTrips"] == {"postgres": 2, "mongodb": 1, "redis": 0}


async def test_node_lookups_are_batched_per_type(seeded: Seeded) -> None:
    ids = await seeded.data("{ reports(first: 30) { edges { node { id } } } }")
    global_ids = [edge["node"]["id"] for edge in ids["reports"]["edges"]]
    trips = await seeded.query(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": global_ids}
    )
    assert trips["extensions"]["roundTrips"]["postgres"] == 1
    assert [node["id"] for node in trips["data"]["nodes"]] == global_ids


async def test_the_naive_header_is_ignored_unless_the_settings_allow_it(seeded: Seeded) -> None:
    naive = await seeded.query(NESTED, {"first": 10}, **{"x-gateway-lookups": "naive"})
    assert naive["extensions"]["roundTrips"] == {"postgres": 4, "mongodb": 1, "redis": 1}


async def test_naive_lookups_cost_a_round_trip_per_row_when_allowed(seeded: Seeded) -> None:
    allowing = seeded.settings.model_copy(update={"allow_naive_lookups": True})
    async with lifespan_client(create_app(allowing)) as client:
        response = await client.post(
            "/graphql",
            json={"query": NESTED, "variables": {"first": 10}},
            headers={"x-gateway-lookups": "naive"},
        )
    result = response.json()
    batched = await seeded.query(NESTED, {"first": 10})
    assert result["data"] == batched["data"]
    trips = result["extensions"]["roundTrips"]
    assert trips["postgres"] > 30
    assert trips["mongodb"] == 10
    assert trips["redis"] == 10


async def test_round_trips_are_reported_in_production_only_on_request(seeded: Seeded) -> None:
    production = seeded.settings.model_copy(
        update={
            "environment": Environment.PRODUCTION,
            "secret_key": SecretStr("a-real-secret"),
            "persisted_queries_only": False,
        }
    )
    query = {"query": "{ reports(first: 5) { edges { node { title } } } }"}
    async with lifespan_client(create_app(production)) as client:
        plain = (await client.post("/graphql", json=query)).json()
        assert "extensions" not in plain
        asked = await client.post("/graphql", json=query, headers={"x-gateway-round-trips": "1"})
    assert asked.json()["extensions"]["roundTrips"] == {"postgres": 1, "mongodb": 0, "redis": 0}


@pytest.mark.servers_of_its_own
async def test_a_health_check_is_the_pools_not_the_requests(tmp_path: Path) -> None:
    """A connection idle past the health-check interval is PINGed before its next command:
    a round trip of the pool's, not of the request that happened to take the connection.
    On a server of its own, whose count of PINGs no other test process adds to."""
    server = ValkeyServer(tmp_path)
    url = server.start()
    try:
        pool = redis_pool(url, timeout=5, traced=False)
        # Long enough that no pause of a busy machine between connecting and the first
        # command passes it.
        pool.connection_kwargs["health_check_interval"] = 0.5
        client = Redis.from_pool(pool)
        pings = await _pings(url)
        trips = RoundTrips()
        token = current_round_trips.set(trips)
        try:
            await client.get("health-check")
            await asyncio.sleep(0.7)
            await client.get("health-check")
        finally:
            current_round_trips.reset(token)
            await client.aclose()
        # Checked as it connected, and again before the second command: neither counted.
        assert await _pings(url) - pings == 2
        assert trips.redis == 2
    finally:
        server.stop()


async def _pings(url: str) -> int:
    """How many PINGs the server has answered, asked on a connection of its own."""
    observer = Redis.from_url(url)
    try:
        stats: dict[str, dict[str, int]] = await observer.info("commandstats")
        return stats.get("cmdstat_ping", {}).get("calls", 0)
    finally:
        await observer.aclose()


MYSQL_SESSION_COUNTS = text(
    "SHOW SESSION STATUS WHERE Variable_name IN ('Com_set_option', 'Com_rollback', 'Com_select')"
)
only_mysql = pytest.mark.skipif(
    BACKEND != "mysql", reason="a MySQL session counts its own statements"
)


@asynccontextmanager
async def _one_reader_connection(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Connections]:
    """Connections whose reads all go through one pooled connection."""
    monkeypatch.setattr("core.connections.POSTGRES_POOL_SIZE", 1)
    connections = open_connections(
        settings, StoreUrls(settings.database_url, settings.mongo_url, settings.redis_url)
    )
    try:
        yield connections
    finally:
        await connections.close()


async def _driver_reads(connections: Connections) -> None:
    for _ in range(5):
        await lookups.records_by_id(engine=connections.reader, table=REPORT_TYPES, ids=[1, 2])


async def _sqlalchemy_reads(connections: Connections) -> None:
    for _ in range(5):
        async with connections.reader.connect() as connection:
            await connection.execute(text("SELECT 1"))


async def _counted_by_the_session(
    connections: Connections, reads: Callable[[Connections], Awaitable[None]]
) -> dict[str, int]:
    """What the driver sends by itself, which the gateway's count of statements cannot
    see: the one pooled reader's own counts of statements, across ``reads``."""
    counts: list[dict[str, int]] = []
    for _ in range(2):
        async with connections.reader.connect() as connection:
            rows = (await connection.execute(MYSQL_SESSION_COUNTS)).all()
            counts.append({name: int(value) for name, value in rows})
        await reads(connections)
    return {name: counts[1][name] - counts[0][name] for name in counts[0]}


@only_mysql
async def test_a_read_on_mysql_sends_no_statement_to_switch_modes_or_roll_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every read sends its SELECT and nothing else, whether the driver reads it directly
    (every lookup and page) or SQLAlchemy does: no statement switches a mode, and none
    rolls back a transaction that autocommit never opened."""
    async with _one_reader_connection(settings, monkeypatch) as connections:
        direct = await _counted_by_the_session(connections, _driver_reads)
        through_sqlalchemy = await _counted_by_the_session(connections, _sqlalchemy_reads)
    nothing_but_the_reads = {"Com_set_option": 0, "Com_rollback": 0, "Com_select": 5}
    assert direct == nothing_but_the_reads
    assert through_sqlalchemy == nothing_but_the_reads


@only_mysql
async def test_reads_on_mysql_leave_no_transaction_holding_a_table(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader's connection goes back to its pool without a ROLLBACK: had a read left a
    transaction open, the table it read would stay locked against changes to its
    definition (a migration's), as long as the connection stayed pooled."""
    async with _one_reader_connection(settings, monkeypatch) as connections:
        await _driver_reads(connections)
        async with connections.engine.connect() as connection:
            await connection.execute(text("SET SESSION lock_wait_timeout = 1"))
            await connection.execute(text("LOCK TABLES report_types WRITE"))
            await connection.execute(text("UNLOCK TABLES"))


@pytest.mark.skipif(BACKEND != "sqlite", reason="a thread per connection is SQLite's driver's")
async def test_reads_at_once_on_sqlite_share_the_two_connections_of_their_own_pool(
    connections: Connections, settings: Settings
) -> None:
    """Each connection of SQLite's driver is a thread, and threads that read at once take
    turns at the interpreter's lock with the event loop: however many requests read at
    once, they read through two connections, of a pool that writes do not use."""
    await make_catalogue(connections)
    app = create_app(settings.model_copy(update={"response_cache": False}))
    async with lifespan_client(app) as client:
        answers = await asyncio.gather(
            *(
                client.post("/graphql", json={"query": NESTED, "variables": {"first": 20}})
                for _ in range(8)
            )
        )
        assert all("errors" not in answer.json() for answer in answers)
        served = app.state.connections
        readers = served.reader.pool
        assert readers is not served.engine.pool
        assert readers.checkedin() + readers.checkedout() == READERS
