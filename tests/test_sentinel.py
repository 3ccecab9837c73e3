"""A gateway that finds Redis through Sentinel (``redis+sentinel://``): real Valkey servers,
a master, its replica and a sentinel, and failovers of both kinds, a planned one and a
master killed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from core.connections import redis_pool
from core.pools import TimedSentinelPool
from core.settings import Settings
from datasources.counters import stats_key
from datasources.response_cache import EntryReader, entry_key
from gateway.app import create_app
from resolvers.nodes import to_global_id
from tests.clients import Caller, serving, unavailable, websocket
from tests.sentinels import SERVICE, SentinelGroup, sentinel_group
from tests.waiting import eventually

# The Redis servers are the test's own: a run given stores adds nothing to it.
pytestmark = pytest.mark.servers_of_its_own

REPORT = 3
REPORT_ID = to_global_id("Report", REPORT)
VIEWS = "query($id: ID!) { report(id: $id) { title stats { views } } }"
STATS = "subscription($id: ID!) { reportStats(reportId: $id) { views } }"
VIEW = "mutation($id: ID!) { recordView(reportId: $id) { __typename } }"
# A database other than 0, so that the URL's database is seen to be the one used.
DATABASE = 2


@pytest.fixture
async def group(tmp_path: Path) -> AsyncIterator[SentinelGroup]:
    async with sentinel_group(tmp_path / "sentinel") as started:
        yield started


@pytest.fixture
def through_sentinel(settings: Settings, group: SentinelGroup) -> Settings:
    return settings.model_copy(update={"redis_url": group.url(DATABASE)})


@dataclass(frozen=True)
class Served:
    address: str
    client: httpx.AsyncClient


@pytest.fixture
async def gateway(call: Caller, through_sentinel: Settings) -> AsyncIterator[Served]:
    """A gateway on the catalogue of ``call``, with the Redis the sentinel names."""
    async with (
        serving(create_app(through_sentinel)) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as client,
    ):
        yield Served(address, client)


def _streamed(message: dict[str, Any]) -> int | None:
    if message["type"] != "next":
        return None
    return int(message["payload"]["data"]["reportStats"]["views"])


async def _views(client: httpx.AsyncClient) -> int:
    body = (
        await client.post("/graphql", json={"query": VIEWS, "variables": {"id": REPORT_ID}})
    ).json()
    assert "errors" not in body, body
    return int(body["data"]["report"]["stats"]["views"])


async def _view(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": VIEW, "variables": {"id": REPORT_ID}})
    # Whatever happens to Redis, a coded GraphQL answer, never a server error.
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _counted(client: httpx.AsyncClient) -> bool:
    return not unavailable(await _view(client))


async def _stored_views(group: SentinelGroup, port: int) -> int:
    server = group.client(port, DATABASE)
    try:
        return int(await server.hget(stats_key(REPORT), "views") or 0)
    finally:
        await server.aclose()


async def _fail_over(group: SentinelGroup) -> None:
    """A planned failover: the sentinel promotes the replica, and later demotes the old
    master."""
    sentinel = group.client(group.sentinel_port)
    try:
        await sentinel.sentinel_failover(SERVICE)
    finally:
        await sentinel.aclose()
    await group.promoted()


async def _stored(group: SentinelGroup, port: int, digest: str) -> object:
    server = group.client(port, DATABASE)
    try:
        return await server.get(entry_key(digest))
    finally:
        await server.aclose()


async def test_the_gateway_reads_and_writes_the_master_the_sentinel_names(
    gateway: Served, group: SentinelGroup, through_sentinel: Settings
) -> None:
    assert (await gateway.client.get("/readyz")).status_code == 200
    before = await _views(gateway.client)
    for _ in range(2):
        assert await _counted(gateway.client)
    assert await _views(gateway.client) == before + 2
    assert await _stored_views(group, group.master_port) == before + 2

    # A response one process kept is a hit in another, read from the master past redis-py.
    first = await gateway.client.post(
        "/graphql", json={"query": VIEWS, "variables": {"id": REPORT_ID}}
    )
    async with (
        serving(create_app(through_sentinel)) as other,
        httpx.AsyncClient(base_url=f"http://{other}") as client,
    ):
        again = await client.post("/graphql", json={"query": VIEWS, "variables": {"id": REPORT_ID}})
    assert again.headers["x-cache"] == "HIT"
    assert again.json()["data"] == first.json()["data"]


async def test_after_a_planned_failover_every_write_reaches_the_new_master(
    gateway: Served, group: SentinelGroup
) -> None:
    before = await _views(gateway.client)
    assert await _counted(gateway.client)
    await _fail_over(group)
    # The old master still takes writes until the sentinel makes it a replica, seconds
    # later; the gateway has already moved: nothing it counts is lost.
    for _ in range(3):
        assert await _counted(gateway.client)
    assert await _stored_views(group, group.replica_port) == before + 4
    assert await _views(gateway.client) == before + 4


async def test_a_killed_master_is_followed_to_the_replica_the_sentinel_promotes(
    gateway: Served, group: SentinelGroup
) -> None:
    async with websocket(gateway.address, init={}) as socket:
        await socket.subscribe("1", STATS, {"id": REPORT_ID})
        before = _streamed(await socket.receive())
        assert before is not None
        for _ in range(2):
            assert await _counted(gateway.client)
        await socket.until(lambda message: _streamed(message) == before + 2)
        await group.kill_master()
        # Until the sentinel promotes the replica, counting fails with a coded error.
        await eventually(lambda: _counted(gateway.client))
        assert await group.master() == group.replica_port
        # The subscriber is back too, on the new master, with the counts it had copied.
        await socket.until(lambda message: _streamed(message) == before + 3)
    assert await _views(gateway.client) == before + 3
    assert (await gateway.client.get("/readyz")).status_code == 200


async def test_the_hit_path_reads_the_new_master_once_the_pool_knows_it(
    group: SentinelGroup,
) -> None:
    pool = redis_pool(group.url(DATABASE), timeout=2.0, traced=False)
    assert isinstance(pool, TimedSentinelPool)
    redis = Redis.from_pool(pool)
    reader = EntryReader.of(redis, timeout=2.0, kept=2)
    assert reader is not None
    try:
        await redis.set(entry_key("before"), b"kept")
        assert await reader.read("before") == (b"kept", b"0")
        await _fail_over(group)
        await pool.get_master_address()  # type: ignore[no-untyped-call]
        # Written on the new master alone: the old one copies nothing until demoted.
        await redis.set(entry_key("after"), b"new")
        assert await _stored(group, group.master_port, "after") is None
        assert await reader.read("after") == (b"new", b"0")
    finally:
        reader.close()
        await redis.aclose()
