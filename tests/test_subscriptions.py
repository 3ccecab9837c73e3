"""Subscriptions against the real stores: values pushed across processes through Redis,
exact after concurrent increments, fanned out from one feed, cleaned up on disconnect;
both WebSocket protocols and server-sent events, with their close codes; counters
restored from the snapshot when Redis comes back empty."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import make_url
from starlette.applications import Starlette

from core.connections import Connections
from core.pubsub import Hub
from core.settings import Settings
from datasources.channels import on_server
from datasources.counter_snapshots import snapshot_counters
from datasources.counters import PRESENT, Counter, counters_channel, record
from datasources.report_writes import report_channel
from gateway.app import create_app
from gateway.embedded.valkey import ValkeyServer
from gateway.live import Feeds
from resolvers.nodes import to_global_id
from tests.clients import LEGACY, WAIT, Caller, Socket, serving, websocket
from tests.ports import own_port
from tests.scraped import samples, total
from tests.waiting import eventually

REPORT_ID = to_global_id("Report", 3)
STATS = "subscription($id: ID!) { reportStats(reportId: $id) { views downloads } }"
BOARD = "subscription { topReports(limit: 3) { databaseId stats { views } } }"
UPDATED = "subscription($id: ID!) { reportUpdated(reportId: $id) { title status } }"
STATS_QUERY = "query($id: ID!) { report(id: $id) { stats { views } } }"
VIEW = "mutation($id: ID!) { recordView(reportId: $id) { __typename } }"


def _views(message: dict[str, Any]) -> int | None:
    if message["type"] not in ("next", "data"):
        return None
    stats = message["payload"]["data"]["reportStats"]
    return int(stats["views"])


async def _reaches(socket: Socket, views: int) -> None:
    await socket.until(lambda message: _views(message) == views)


async def _count_views(client: httpx.AsyncClient, times: int, report_id: str = REPORT_ID) -> None:
    for _ in range(times):
        response = await client.post(
            "/graphql", json={"query": VIEW, "variables": {"id": report_id}}
        )
        assert response.json()["data"]["recordView"]["__typename"] == "Counted"


@pytest.fixture
async def gateway(settings: Settings, call: Caller) -> AsyncIterator[tuple[str, Starlette]]:
    """A second gateway on the same stores as ``call``'s, served over a real socket."""
    application = create_app(settings)
    async with serving(application) as address:
        yield address, application


async def test_a_subscriber_sees_views_counted_through_another_instance(
    gateway: tuple[str, Starlette], call: Caller
) -> None:
    address, _ = gateway
    async with websocket(address, init={}) as socket:
        await socket.subscribe("1", STATS, {"id": REPORT_ID})
        first = await socket.receive()
        assert (first["type"], first["id"]) == ("next", "1")
        start = _views(first)
        assert start is not None
        await _count_views(call.client, 3)
        await _reaches(socket, start + 3)


async def test_values_are_exact_after_concurrent_increments(
    gateway: tuple[str, Starlette], call: Caller, settings: Settings
) -> None:
    address, _ = gateway
    async with (
        websocket(address, init={}) as socket,
        httpx.AsyncClient(base_url=f"http://{address}") as other,
    ):
        await socket.subscribe("1", STATS, {"id": REPORT_ID})
        start = _views(await socket.receive())
        assert start is not None
        # 60 views through two gateways at once: the last value sent is the exact total.
        await asyncio.gather(*(_count_views(client, 15) for client in (call.client, other) * 2))
        await _reaches(socket, start + 60)
    stats = await call("query($id: ID!) { report(id: $id) { stats { views } } }", {"id": REPORT_ID})
    assert stats["report"]["stats"]["views"] == start + 60


async def test_subscribers_of_one_operation_share_one_feed(
    gateway: tuple[str, Starlette], call: Caller
) -> None:
    address, application = gateway
    feeds: Feeds = application.state.feeds
    async with (
        websocket(address, init={}) as first,
        websocket(address, init={}) as second,
        websocket(address, init={}, protocol=LEGACY) as legacy,
    ):
        for socket in (first, second, legacy):
            subscribe = "start" if socket is legacy else "subscribe"
            payload = {"query": STATS, "variables": {"id": REPORT_ID}}
            await socket.send({"id": "s", "type": subscribe, "payload": payload})
        starts = [_views(await socket.receive()) for socket in (first, second, legacy)]
        assert len(set(starts)) == 1
        assert starts[0] is not None
        assert (feeds.running, feeds.subscribers) == (1, 3)
        await _count_views(call.client, 1)
        for socket in (first, second, legacy):
            await _reaches(socket, starts[0] + 1)


async def test_a_disconnect_leaves_no_task_no_feed_and_no_redis_subscription(
    gateway: tuple[str, Starlette], settings: Settings
) -> None:
    address, application = gateway
    feeds: Feeds = application.state.feeds
    redis = Redis.from_url(settings.redis_url or "")
    channel = on_server(redis, counters_channel(3))
    # The gateway runs in this event loop: its tasks are among these.
    tasks_before = asyncio.all_tasks()
    try:
        async with websocket(address, init={}) as socket:
            await socket.subscribe("1", STATS, {"id": REPORT_ID})
            await socket.receive()
            assert channel.encode() in await redis.pubsub_channels(on_server(redis, "live:*"))
            assert feeds.running == 1
        await eventually(lambda: _gone(redis, channel, feeds))
        await eventually(
            lambda: _none_left(tasks_before), instead=lambda: _described(_left(tasks_before))
        )
    finally:
        await redis.aclose()


class Heard:
    """A listener of a hub that keeps what it heard."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def message(self, data: bytes) -> None:
        self.messages.append(data)

    def connected(self) -> None:
        pass

    def disconnected(self, error: BaseException) -> None:
        pass


async def test_gateways_on_two_databases_of_one_redis_hear_only_their_own(
    settings: Settings,
) -> None:
    ours = Redis.from_url(settings.redis_url or "")
    url = make_url(settings.redis_url or "")
    theirs = Redis.from_url(
        url.set(database=str(int(url.database or 0) + 1)).render_as_string(hide_password=False)
    )
    hubs, heard = (Hub(ours), Hub(theirs)), (Heard(), Heard())
    channel = counters_channel(1)
    try:
        for hub, listener in zip(hubs, heard, strict=True):
            await hub.start()
            hub.listen(channel, listener)
            await hub.subscribed(channel)
        await ours.set(PRESENT, 1)
        await record(redis=ours, report_id=1, counter=Counter.VIEWS)
        await hubs[0].announce(channel)
        # Sent after ours: had theirs heard ours, it would have heard it before this.
        await hubs[1].announce(channel)

        async def delivered() -> bool:
            return len(heard[0].messages) == 2 and len(heard[1].messages) == 1

        await eventually(delivered)
        assert heard[0].messages == [b"views", b""]
        assert heard[1].messages == [b""]
    finally:
        for hub in hubs:
            await hub.stop()
        await ours.aclose()
        await theirs.aclose()


class _Unreadable(Heard):
    def message(self, data: bytes) -> None:
        raise ValueError(f"cannot read {data!r}")


async def test_a_listener_that_fails_on_a_message_leaves_the_others_hearing(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    redis = Redis.from_url(settings.redis_url or "")
    hub, heard = Hub(redis), Heard()
    channel = counters_channel(1)
    try:
        await hub.start()
        hub.listen(channel, _Unreadable())
        hub.listen(channel, heard)
        await hub.subscribed(channel)
        for _ in range(2):
            await hub.announce(channel)

        async def both_heard() -> bool:
            return heard.messages == [b"", b""]

        await eventually(both_heard)
        failures = [record for record in caplog.records if record.name == "core.pubsub"]
        assert len(failures) == 2
        assert all("cannot read" in str(record.exc_info) for record in failures)
    finally:
        await hub.stop()
        await redis.aclose()


async def test_a_subscriber_that_leaves_during_an_outage_is_forgotten() -> None:
    stopped = Redis.from_url("redis://127.0.0.1:1/0")
    hub = Hub(stopped)
    try:
        await hub.start()
        waiting = asyncio.create_task(hub.subscribed(counters_channel(1)))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # Redis is down: it waits
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert not hub._waiters  # nothing kept for a channel nobody waits for
    finally:
        await hub.stop()
        await stopped.aclose()


async def _gone(redis: Redis, channel: str, feeds: Feeds) -> bool:
    listened = await redis.pubsub_channels(on_server(redis, "live:*"))
    return channel.encode() not in listened and feeds.running == 0


def _left(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - before - {asyncio.current_task()}


async def _none_left(before: set[asyncio.Task[Any]]) -> bool:
    return not _left(before)


def _described(tasks: set[asyncio.Task[Any]]) -> list[str]:
    return [f"{task.get_name()}: {task.get_coro()!r}" for task in tasks]


async def test_the_leaderboard_is_sent_when_it_changes(
    gateway: tuple[str, Starlette], call: Caller
) -> None:
    address, _ = gateway
    async with websocket(address, init={}) as socket:
        await socket.subscribe("board", BOARD)
        board = (await socket.receive())["payload"]["data"]["topReports"]
        assert len(board) == 3
        # A report not on the board climbs to the top.
        on_board = {entry["databaseId"] for entry in board}
        climber = next(report for report in range(1, 21) if report not in on_board)
        needed = board[0]["stats"]["views"] + 1
        await _count_views(call.client, needed, to_global_id("Report", climber))
        top = await socket.until(
            lambda message: message["payload"]["data"]["topReports"][0]["databaseId"] == climber
        )
        assert top["payload"]["data"]["topReports"][0]["stats"]["views"] >= needed


async def test_a_report_is_sent_after_each_change_until_it_is_deleted(
    gateway: tuple[str, Starlette], call: Caller, settings: Settings
) -> None:
    address, _ = gateway
    redis = Redis.from_url(settings.redis_url or "")
    channel = on_server(redis, report_channel(3)).encode()

    async def listened() -> bool:
        return channel in await redis.pubsub_channels(on_server(redis, "live:*"))

    async with websocket(address, init={}) as socket:
        await socket.subscribe("u", UPDATED, {"id": REPORT_ID})
        # It sends nothing until a change: the write waits until Redis has its channel.
        await eventually(listened)
        await redis.aclose()
        await call(
            'mutation($id: ID!) { updateReport(id: $id, input: {title: "Live"}) { __typename } }',
            {"id": REPORT_ID},
            role="editor",
        )
        changed = await socket.receive()
        assert changed["payload"]["data"]["reportUpdated"]["title"] == "Live"
        await call(
            "mutation($id: ID!) { deleteReport(id: $id) { __typename } }",
            {"id": REPORT_ID},
            role="admin",
        )
        assert await socket.receive() == {"id": "u", "type": "complete"}


async def test_refusals_get_the_protocols_close_codes_and_errors(
    gateway: tuple[str, Starlette],
) -> None:
    address, _ = gateway
    async with websocket(address, init={"Authorization": "Bearer wrong"}, acknowledged=False) as s:
        assert await s.closed_with() == 4403
    async with websocket(address) as s:  # no connection_init
        await s.subscribe("1", STATS, {"id": REPORT_ID})
        assert await s.closed_with() == 4401
    async with websocket(address, init={}) as s:
        # A document that does not parse or validate is that operation's error, with a
        # code; the connection, and its other subscriptions, go on.
        unparsable = "subscription { reportStats("
        invalid = "subscription { reportStats(reportId: 1) { nope } }"
        for id, document in (("0", unparsable), ("1", invalid)):
            await s.subscribe(id, document)
            refused = await s.receive()
            assert (refused["type"], refused["id"]) == ("error", id)
            assert refused["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        await s.subscribe("2", STATS, {"id": to_global_id("Report", 999_999)})
        missing = await s.receive()
        assert (missing["type"], missing["payload"][0]["extensions"]["code"]) == (
            "error",
            "NOT_FOUND",
        )
        await s.subscribe("3", STATS, {"id": REPORT_ID})
        await s.receive()
        await s.subscribe("3", STATS, {"id": REPORT_ID})
        assert await s.closed_with() == 4409


async def test_too_many_subscriptions_close_the_connection(
    settings: Settings, call: Caller
) -> None:
    limited = settings.model_copy(update={"max_subscriptions_per_connection": 2})
    async with serving(create_app(limited)) as address, websocket(address, init={}) as socket:
        for id in ("1", "2"):
            await socket.subscribe(id, STATS, {"id": REPORT_ID})
            await socket.receive()
        await socket.subscribe("3", STATS, {"id": REPORT_ID})
        assert await socket.closed_with() == 4429


async def test_both_protocols_keep_idle_connections_alive(settings: Settings, call: Caller) -> None:
    lively = settings.model_copy(update={"ws_keep_alive": 0.1})
    async with serving(create_app(lively)) as address:
        async with websocket(address, init={}) as socket, asyncio.timeout(WAIT):
            assert json.loads(await socket.socket.recv()) == {"type": "ping"}
        async with websocket(address, init={}, protocol=LEGACY) as socket, asyncio.timeout(WAIT):
            assert json.loads(await socket.socket.recv()) == {"type": "ka"}


async def test_the_legacy_protocol_stops_with_complete(gateway: tuple[str, Starlette]) -> None:
    address, _ = gateway
    async with websocket(address, init={}, protocol=LEGACY) as socket:
        payload = {"query": STATS, "variables": {"id": REPORT_ID}}
        await socket.send({"id": "a", "type": "start", "payload": payload})
        assert (await socket.receive())["type"] == "data"
        await socket.send({"id": "a", "type": "stop"})
        assert await socket.receive() == {"type": "complete", "id": "a"}


async def test_server_sent_events_carry_a_subscription(
    gateway: tuple[str, Starlette], call: Caller
) -> None:
    address, _ = gateway
    headers = {"accept": "text/event-stream"}
    params = {"query": STATS, "variables": json.dumps({"id": REPORT_ID})}
    async with (
        httpx.AsyncClient(base_url=f"http://{address}", timeout=WAIT) as client,
        client.stream("GET", "/graphql", params=params, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response.aiter_lines())
        start = _sse_views(await anext(events))
        await _count_views(call.client, 2)
        while _sse_views(await anext(events)) != start + 2:
            pass
    refused = await call.client.get("/graphql", params={"query": STATS}, headers=headers)
    assert refused.status_code == 400


async def test_websocket_operations_are_counted_as_requests_and_subscriptions(
    gateway: tuple[str, Starlette],
) -> None:
    address, _ = gateway
    named = "query Views($id: ID!) { report(id: $id) { stats { views } } }"
    live = "subscription Live($id: ID!) { reportStats(reportId: $id) { views } }"

    def ended(id: str) -> Callable[[dict[str, Any]], bool]:
        return lambda message: message.get("id") == id and message["type"] in ("complete", "error")

    async with httpx.AsyncClient(base_url=f"http://{address}", timeout=WAIT) as client:
        before = samples((await client.get("/metrics")).text)
        async with websocket(address, init={}) as socket:
            await socket.subscribe("query", named, {"id": REPORT_ID})
            assert (await socket.until(ended("query")))["type"] == "complete"
            await socket.subscribe("broken", "query Broken { nope }")
            assert (await socket.until(ended("broken")))["type"] == "error"
            await socket.subscribe("live", live, {"id": REPORT_ID})
            await socket.until(lambda message: _views(message) is not None)
            await socket.subscribe("unbound", live)  # $id is required
            assert (await socket.until(ended("unbound")))["type"] == "error"
        async with websocket(address, init={}, protocol=LEGACY) as socket:
            payload = {"query": named, "variables": {"id": REPORT_ID}}
            await socket.send({"id": "old", "type": "start", "payload": payload})
            # The older protocol runs subscriptions only: a query is refused.
            assert (await socket.until(ended("old")))["type"] == "error"
        params = {"query": live, "variables": json.dumps({"id": REPORT_ID})}
        async with client.stream(
            "GET", "/graphql", params=params, headers={"accept": "text/event-stream"}
        ) as response:
            await anext(_events(response.aiter_lines()))
        after = samples((await client.get("/metrics")).text)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    requests = "gateway_requests_total"
    assert grew(requests, operation="Views", outcome="ok", execution="websocket") == 1
    assert grew(requests, operation="Views", outcome="rejected", execution="websocket") == 1
    # A document that does not validate names no operation.
    assert grew(requests, operation="none", outcome="rejected", execution="websocket") == 1
    assert grew("gateway_request_duration_seconds_count", execution="websocket") == 3
    assert grew("gateway_errors_total", code="BAD_USER_INPUT") == 3
    subscriptions = "gateway_subscriptions_total"
    assert grew(subscriptions, operation="Live", transport="websocket", outcome="ok") == 1
    assert grew(subscriptions, operation="none", transport="websocket", outcome="rejected") == 1
    assert grew(subscriptions, operation="Live", transport="sse", outcome="ok") == 1


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    event = data = ""
    async for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and event:
            yield event, data
            event = data = ""


def _sse_views(event: tuple[str, str]) -> int:
    kind, data = event
    assert kind == "next"
    return int(json.loads(data)["data"]["reportStats"]["views"])


async def test_counters_come_back_from_the_snapshot_when_redis_returns_empty(
    connections: Connections, call: Caller
) -> None:
    stats = STATS_QUERY
    await _count_views(call.client, 4)
    counted = (await call(stats, {"id": REPORT_ID}))["report"]["stats"]["views"]
    await snapshot_counters(redis=connections.redis, engine=connections.engine)
    await connections.redis.flushdb()
    assert (await call(stats, {"id": REPORT_ID}))["report"]["stats"]["views"] == counted
    # Increments after the restore add to the restored value.
    await connections.redis.flushdb()
    await _count_views(call.client, 1)
    assert (await call(stats, {"id": REPORT_ID}))["report"]["stats"]["views"] == counted + 1


class RestartableRedis:
    """A Redis-protocol server that keeps nothing on disk, restarted on the same port:
    it comes back empty, as a Redis without persistence does."""

    def __init__(self, directory: Path) -> None:
        self.server = ValkeyServer(directory)
        self.port = own_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.server.url(self.port)

    def start(self) -> None:
        command = [*self.server.command(self.port), "--appendonly", "no"]
        self.server.store_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while not self.server.is_ready(self.port):
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


async def test_a_subscriber_gets_the_restored_counters_after_redis_restarts(
    settings: Settings, call: Caller, connections: Connections, tmp_path: Path
) -> None:
    await _count_views(call.client, 2)
    await snapshot_counters(redis=connections.redis, engine=connections.engine)
    snapshot = (await call(STATS_QUERY, {"id": REPORT_ID}))["report"]["stats"]["views"]
    redis_server = RestartableRedis(tmp_path / "redis")
    redis_server.start()
    try:
        restartable = settings.model_copy(update={"redis_url": redis_server.url})
        async with (
            serving(create_app(restartable)) as address,
            websocket(address, init={}) as socket,
        ):
            # This gateway's Redis starts empty: its counters come from the snapshot.
            await socket.subscribe("1", STATS, {"id": REPORT_ID})
            assert _views(await socket.receive()) == snapshot
            await asyncio.to_thread(redis_server.stop)
            await asyncio.to_thread(redis_server.start)
            async with httpx.AsyncClient(base_url=f"http://{address}") as client:
                await eventually(lambda: _counted(client))
            await _reaches(socket, snapshot + 1)
    finally:
        redis_server.stop()


async def _counted(client: httpx.AsyncClient) -> bool:
    response = await client.post("/graphql", json={"query": VIEW, "variables": {"id": REPORT_ID}})
    return bool((response.json().get("data") or {}).get("recordView"))


async def test_shutdown_copies_the_counters(
    settings: Settings, connections: Connections, call: Caller
) -> None:
    application = create_app(settings.model_copy(update={"counter_snapshot_interval": 0}))
    async with (
        serving(application) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as client,
    ):
        await _count_views(client, 1)
    views = (await call(STATS_QUERY, {"id": REPORT_ID}))["report"]["stats"]["views"]
    async with connections.engine.connect() as connection:
        rows = await connection.exec_driver_sql(
            "SELECT views FROM report_counter_snapshots WHERE report_id = 3"
        )
        assert rows.scalar() == views
