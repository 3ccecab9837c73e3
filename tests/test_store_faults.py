"""A store's faults cost its own fields and nothing else: what counts as a store being down,
a circuit that fails its fields at once while it is, reads that keep to the store timeout
without being cancelled, and API keys that do not need PostgreSQL for every request."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from time import monotonic
from typing import Any

import asyncpg.exceptions
import pytest
from pymongo.errors import ServerSelectionTimeoutError
from redis.exceptions import ResponseError
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from core.connections import Connections, open_connections
from core.outages import reason
from core.pubsub import Hub
from core.settings import Settings
from core.store_urls import StoreUrls
from core.stores import (
    FAILURES_TO_OPEN,
    Circuit,
    Store,
    StoreCalls,
    StoreDownError,
    completed_within,
    unavailable,
    unreachable_store,
)
from datasources.documents import documents_by_report
from datasources.models import Role
from datasources.report_writes import report_channel
from gateway.app import create_app
from resolvers.nodes import to_global_id
from tests.clients import Caller, issue_key, lifespan_client
from tests.faults import HeldStoreCall
from tests.test_subscriptions import Heard
from tests.waiting import eventually

DOCUMENTS = "{ reports(first: 3) { edges { node { title document { tags } } } } }"


def test_what_says_a_store_is_down() -> None:
    gone = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
    assert unavailable(Store.POSTGRES, gone)
    shutting_down = DBAPIError("SELECT 1", {}, asyncpg.exceptions.AdminShutdownError())
    assert unavailable(Store.POSTGRES, shutting_down)
    assert not unavailable(Store.POSTGRES, IntegrityError("INSERT", {}, Exception("unique")))
    assert unavailable(Store.MONGODB, ServerSelectionTimeoutError("no server"))
    assert not unavailable(Store.MONGODB, RuntimeError("a bug of ours"))
    assert unavailable(Store.REDIS, ConnectionRefusedError())


def test_an_error_is_a_stores_only_if_its_driver_raised_it(tmp_path: Path) -> None:
    """An operating system's error is a store's when its driver met it (a refused
    connection); not when other code did, under a store's call (a migration's file)."""
    with pytest.raises(FileNotFoundError) as missing:
        (tmp_path / "revision.py").read_text()
    assert unavailable(Store.POSTGRES, missing.value)
    assert unreachable_store(missing.value) is None


def test_why_a_store_failed_is_told_in_its_drivers_words_and_no_more() -> None:
    wrapped = DBAPIError("SELECT 1", {"secret": "parameter"}, ConnectionError("refused"))
    assert reason(wrapped) == "ConnectionError: refused"
    # A timeout is raised from a cancellation, which says nothing.
    timeout = TimeoutError()
    timeout.__cause__ = asyncio.CancelledError()
    assert reason(timeout) == "TimeoutError"
    # Redis echoes a command it does not know, a password among its arguments.
    unknown = ResponseError("unknown command 'HELLO', with args beginning with: '3' 'AUTH' 'pw'")
    assert reason(unknown) == "ResponseError: unknown command 'HELLO'"


class FailingDocuments:
    """MongoDB's read of documents, down until ``back`` is set: counts the calls that
    reached it."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0
        self.back = False

    async def __call__(self, **arguments: Any) -> Any:
        self.calls += 1
        if not self.back:
            raise ServerSelectionTimeoutError("no server is available")
        return await self.real(**arguments)


def _documents_failed(body: dict[str, Any]) -> bool:
    codes = {error["extensions"]["code"] for error in body.get("errors", [])}
    titles = [edge["node"]["title"] for edge in body["data"]["reports"]["edges"]]
    return codes == {"SERVICE_UNAVAILABLE"} and all(titles)


async def test_a_down_store_fails_its_fields_at_once_until_a_probe_finds_it_back(
    settings: Settings,
    call: Caller,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="core.stores")
    failing = FailingDocuments(documents_by_report)
    monkeypatch.setattr("core.sources.documents_by_report", failing)
    monkeypatch.setattr("core.stores.OPEN_FOR", 3600.0)
    uncached = settings.model_copy(update={"response_cache": False})
    application = create_app(uncached)
    async with lifespan_client(application) as client:
        for _ in range(2):  # the failures that open the circuit
            assert _documents_failed(
                (await client.post("/graphql", json={"query": DOCUMENTS})).json()
            )
        assert failing.calls == 2
        for _ in range(5):  # then MongoDB's fields fail without a call, the others answer
            assert _documents_failed(
                (await client.post("/graphql", json={"query": DOCUMENTS})).json()
            )
        assert failing.calls == 2
        ready = (await client.get("/readyz")).json()
        assert ready["circuits"]["mongodb"] == "open"

        # Once the circuit has been open long enough, one call probes the store.
        failing.back = True
        later = monotonic() + 3601
        monkeypatch.setattr("core.stores.monotonic", lambda: later)

        async def answered() -> bool:
            body = (await client.post("/graphql", json={"query": DOCUMENTS})).json()
            return "errors" not in body

        await eventually(answered)
        assert (await client.get("/readyz")).json()["circuits"]["mongodb"] == "closed"
    # Once as it went down, with the driver's words, and once as it came back.
    assert [record.getMessage() for record in caplog.records if record.name == "core.stores"] == [
        "mongodb is unavailable: its fields fail at once until it answers"
        " (ServerSelectionTimeoutError: no server is available)",
        "mongodb answers again",
    ]


async def test_a_store_is_taken_as_hung_at_the_very_reading_of_the_clock_that_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A start and a limit whose sum is a reading from which the start is a rounding less
    # than the limit away: the boundary that a sum and a difference see differently.
    started, hung_after = 400891.03657987155, 0.1
    assert (started + hung_after) - started < hung_after
    readings = iter([started - 1, started, started])  # made, read started, first look
    monkeypatch.setattr("core.stores.HUNG_AFTER", hung_after)
    monkeypatch.setattr("core.stores.monotonic", lambda: next(readings, started + hung_after))
    circuit = Circuit(Store.REDIS, StoreCalls(timeout=1.0))
    unanswered = asyncio.get_running_loop().create_future()
    try:
        with pytest.raises(StoreDownError):
            async with asyncio.timeout(30):  # the store timeout otherwise: ten minutes
                await circuit.call(unanswered, limit=600.0)
        assert circuit.is_open
    finally:
        unanswered.cancel()


async def test_a_call_leaving_that_is_not_the_probe_lets_no_second_probe_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("core.stores.OPEN_FOR", 0.0)  # a probe may pass at once
    circuit = Circuit(Store.POSTGRES, StoreCalls(timeout=1.0))
    loop = asyncio.get_running_loop()
    write, probed = loop.create_future(), loop.create_future()
    writing = asyncio.create_task(circuit.call(write, None))  # admitted while it answered
    await asyncio.sleep(0)
    for _ in range(FAILURES_TO_OPEN):
        circuit.failed(ConnectionError("connection refused"))
    probing = asyncio.create_task(circuit.call(probed, None))
    await asyncio.sleep(0)
    writing.cancel()  # its caller left; the probe is still under way
    await asyncio.gather(writing, return_exceptions=True)

    async def answered() -> int:
        return 1

    try:
        with pytest.raises(StoreDownError):
            await circuit.call(answered(), None)
    finally:
        for left in (writing, probing, write, probed):
            left.cancel()
        await asyncio.gather(writing, probing, return_exceptions=True)


async def test_a_hung_read_is_answered_at_the_store_timeout_and_left_to_finish(
    settings: Settings, call: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldStoreCall([])
    monkeypatch.setattr("core.sources.top_report_ids", held)
    # Short, but long enough for the start-up's own store calls on a busy machine, and
    # shorter than it takes a store to count as hung.
    quick = settings.model_copy(update={"store_timeout": 1.0, "response_cache": False})
    async with lifespan_client(create_app(quick)) as client:
        body = (await client.post("/graphql", json={"query": "{ topReports { title } }"})).json()
        assert body["data"]["topReports"] is None
        extensions = body["errors"][0]["extensions"]
        assert (extensions["code"], extensions["store"]) == ("SERVICE_UNAVAILABLE", "redis")
        # Not cancelled: the call goes on to its end.
        assert held.events == ["started"]
        held.release.set()

        async def finished() -> bool:
            return held.events == ["started", "finished"]

        await eventually(finished)


async def test_the_clients_close_once_the_calls_left_running_have_ended(
    settings: Settings,
) -> None:
    quick = settings.model_copy(update={"store_timeout": 1.0})
    connections = open_connections(
        quick, StoreUrls(quick.database_url, quick.mongo_url, quick.redis_url)
    )
    opened: list[object] = []
    closed: list[object] = []
    event.listen(connections.engine.sync_engine, "connect", lambda dbapi, _: opened.append(dbapi))
    event.listen(connections.engine.sync_engine, "close", lambda dbapi, _: closed.append(dbapi))
    released = asyncio.Event()
    reading = asyncio.Event()
    outcomes: dict[str, str] = {}

    async def read(name: str) -> None:
        try:
            async with connections.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
                if name == "ends":
                    reading.set()
                # Its caller has stopped waiting: the call holds its connection meanwhile.
                await (released.wait() if name == "ends" else asyncio.Event().wait())
            outcomes[name] = "ended"
        except asyncio.CancelledError:
            outcomes[name] = "cancelled"
            raise

    for name in ("ends", "never ends"):
        with pytest.raises(TimeoutError):
            await completed_within(read(name), Store.POSTGRES, 0.1, connections.calls)
    # However long its connecting took. The other may be waiting still: on SQLite, for
    # the file's write lock, which the first one's transaction holds.
    await reading.wait()
    closing = asyncio.create_task(connections.close())
    released.set()
    await closing
    # The call that could end did; the one still running at the store timeout was
    # cancelled; both gave their connection back before the pool closed it.
    assert outcomes == {"ends": "ended", "never ends": "cancelled"}
    assert len(opened) == 2
    assert closed == opened


async def test_an_api_key_checked_lately_keeps_its_other_stores_fields_while_postgres_is_down(
    settings: Settings, connections: Connections, call: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    recent = await issue_key(connections, settings, Role.READER, "recent")
    unseen = await issue_key(connections, settings, Role.READER, "unseen")
    query = {"query": "{ topReports(limit: 2) { title } }"}
    async with lifespan_client(create_app(settings)) as client:
        checked = await client.post("/graphql", json=query, headers=_bearer(recent.key))
        assert "errors" not in checked.json()

        async def postgres_down(**_: Any) -> None:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")

        monkeypatch.setattr("core.auth.role_of_key", postgres_down)
        again = await client.post("/graphql", json=query, headers=_bearer(recent.key))
        assert again.status_code == 200
        assert "topReports" in again.json()["data"]
        refused = await client.post("/graphql", json=query, headers=_bearer(unseen.key))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"


async def test_announcements_slower_than_a_moment_do_not_take_redis_for_down(
    call: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    announce = Hub.announce
    announced: list[str] = []

    async def slow_announce(hub: Hub, channel: str) -> None:
        await asyncio.sleep(0.6)  # slow, yet well within the store timeout
        await announce(hub, channel)
        announced.append(channel)

    monkeypatch.setattr(Hub, "announce", slow_announce)
    edit = """mutation($id: ID!, $words: Int!) {
        updateReport(id: $id, input: {wordCount: $words}) { __typename }
    }"""
    await asyncio.gather(
        *(call(edit, {"id": to_global_id("Report", report), "words": 7}) for report in (1, 2))
    )

    async def both_announced() -> bool:
        return len(announced) == 2

    await eventually(both_announced)
    assert (await call.client.get("/readyz")).json()["circuits"]["redis"] == "closed"


async def test_a_write_is_announced_while_redis_s_circuit_is_open(
    settings: Settings, call: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("core.stores.OPEN_FOR", 3600.0)
    subscriber = Heard()
    application = create_app(settings)
    async with lifespan_client(application) as client:
        hub: Hub = application.state.hub
        channel = report_channel(1)
        hub.listen(channel, subscriber)
        await hub.subscribed(channel)
        # Taken for down (reads that timed out, say) while its pub/sub connection is up.
        circuit = application.state.connections.circuits[Store.REDIS]
        for _ in range(FAILURES_TO_OPEN):
            circuit.failed(TimeoutError("no answer within 5s"))
        assert circuit.is_open
        edit = """mutation($id: ID!) {
            updateReport(id: $id, input: {wordCount: 7}) { __typename }
        }"""
        edited = await client.post(
            "/graphql",
            json={"query": edit, "variables": {"id": to_global_id("Report", 1)}},
            headers=_bearer(call.keys["editor"]),
        )
        assert edited.json()["data"]["updateReport"]["__typename"] == "ReportSaved"

        async def heard() -> bool:
            return len(subscriber.messages) == 1

        await eventually(heard)


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_store_that_answers_nothing_opens_its_circuit_before_the_store_timeout(
    settings: Settings, call: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldStoreCall([])
    monkeypatch.setattr("core.sources.top_report_ids", held)
    monkeypatch.setattr("core.stores.HUNG_AFTER", 0.1)
    monkeypatch.setattr("core.stores.OPEN_FOR", 3600.0)  # no probe between the two requests
    patient = settings.model_copy(update={"store_timeout": 600.0, "response_cache": False})
    async with lifespan_client(create_app(patient)) as client:
        query = {"query": "{ topReports { title } }"}
        first = (await client.post("/graphql", json=query)).json()
        assert first["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert (await client.get("/readyz")).json()["circuits"]["redis"] == "open"
        second = (await client.post("/graphql", json=query)).json()
        assert second["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert held.events == ["started"]  # the second made no call
        held.release.set()
