from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import text

from core.connections import Connections
from core.settings import Settings
from datasources.counter_snapshots import snapshot_counters
from datasources.counters import ReportCounters, set_report_counters
from gateway.app import create_app
from gateway.seed import seed
from tests.clients import lifespan_client

BY_VIEWS = """{ reports(first: 3, orderBy: {field: VIEWS, direction: DESC}) {
  edges { node { databaseId stats { views } } } } }"""


async def _snapshot(connections: Connections) -> dict[int, tuple[int, int]]:
    async with connections.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT report_id, views, downloads FROM report_counter_snapshots")
        )
        return {row.report_id: (row.views, row.downloads) for row in rows}


async def test_the_seed_leaves_snapshots_equal_to_the_live_counters(
    connections: Connections,
) -> None:
    await seed(connections, reports=50, progress=False)
    snapshot = await _snapshot(connections)
    assert len(snapshot) == 50
    for report_id, (views, downloads) in snapshot.items():
        live = await connections.redis.hmget(f"report:{report_id}:stats", "views", "downloads")
        assert (views, downloads) == (int(live[0] or 0), int(live[1] or 0))


async def test_a_refresh_reorders_reports_by_views(
    connections: Connections, client: httpx.AsyncClient
) -> None:
    await seed(connections, reports=50, progress=False)
    await set_report_counters(
        redis=connections.redis,
        counters=[ReportCounters(report_id=7, views=10**8, downloads=1)],
    )
    # Counters set and copied here, not by the app: asked past the response cache, which
    # keeps what reads them for a second.
    fresh = {"cache-control": "no-cache"}
    before = (await client.post("/graphql", json={"query": BY_VIEWS}, headers=fresh)).json()
    # Live counters are live at once; the ordering follows the snapshot.
    assert before["data"]["reports"]["edges"][0]["node"]["databaseId"] != 7
    await snapshot_counters(redis=connections.redis, engine=connections.engine)
    after = (await client.post("/graphql", json={"query": BY_VIEWS}, headers=fresh)).json()["data"]
    assert after["reports"]["edges"][0]["node"] == {"databaseId": 7, "stats": {"views": 10**8}}


async def test_counters_of_deleted_reports_are_skipped(connections: Connections) -> None:
    await seed(connections, reports=20, progress=False)
    async with connections.engine.begin() as connection:
        await connection.execute(text("DELETE FROM reports WHERE id = 3"))
    assert await snapshot_counters(redis=connections.redis, engine=connections.engine) == 20
    assert 3 not in await _snapshot(connections)


async def test_the_gateway_refreshes_snapshots_periodically(
    connections: Connections, settings: Settings
) -> None:
    await seed(connections, reports=10, progress=False)
    await set_report_counters(
        redis=connections.redis, counters=[ReportCounters(report_id=4, views=4242, downloads=42)]
    )
    frequent = settings.model_copy(update={"counter_snapshot_interval": 0.05})
    async with lifespan_client(create_app(frequent)):
        for _ in range(200):
            if (await _snapshot(connections)).get(4) == (4242, 42):
                break
            await asyncio.sleep(0.05)
    assert (await _snapshot(connections))[4] == (4242, 42)
