"""The embedded servers as a user meets them: restarts, crashes, two gateways, a dead store."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from core.settings import Settings
from core.store_urls import StoreUrls
from gateway.app import create_app
from gateway.embedded import DataDirectoryInUseError, EmbeddedStores, postgres, process
from gateway.embedded.mongo import MongoServer
from gateway.embedded.postgres import (
    OWNER_SUFFIX,
    SHARED_ROOT,
    PostgresServer,
    making_path,
    pristine_cluster_path,
)
from gateway.embedded.process import EmbeddedServer, free_port, recorded_process
from gateway.embedded.valkey import ValkeyServer
from tests import processes
from tests.clients import lifespan_client
from tests.ports import own_port
from tests.processes import Launch, environment, gateway_command
from tests.waiting import eventually


async def _write_everywhere(urls: StoreUrls) -> None:
    assert urls.database_url
    assert urls.mongo_url
    assert urls.redis_url
    engine = create_async_engine(urls.database_url)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE kept (value text)"))
        await connection.execute(text("INSERT INTO kept VALUES ('postgres survives')"))
    await engine.dispose()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(urls.mongo_url)
    await mongo["kept"]["notes"].insert_one({"_id": 1, "value": "mongodb survives"})
    await mongo.close()
    redis = Redis.from_url(urls.redis_url)
    await redis.set("kept", "redis survives")
    await redis.aclose()


async def _read_everywhere(urls: StoreUrls) -> list[Any]:
    assert urls.database_url
    assert urls.mongo_url
    assert urls.redis_url
    engine = create_async_engine(urls.database_url)
    async with engine.connect() as connection:
        relational = await connection.scalar(text("SELECT value FROM kept"))
    await engine.dispose()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(urls.mongo_url)
    document = await mongo["kept"]["notes"].find_one({"_id": 1})
    await mongo.close()
    redis = Redis.from_url(urls.redis_url)
    cached = await redis.get("kept")
    await redis.aclose()
    return [relational, document and document["value"], cached]


async def test_data_survives_a_restart(tmp_path: Path) -> None:
    with EmbeddedStores(tmp_path, StoreUrls()) as first:
        urls = first.start()
        await _write_everywhere(urls)
    with EmbeddedStores(tmp_path, StoreUrls()) as second:
        restarted = second.start()
        assert await _read_everywhere(restarted) == [
            "postgres survives", "mongodb survives", b"redis survives",
        ]  # fmt: skip


def test_a_second_owner_is_refused_and_a_short_lived_command_may_attach(tmp_path: Path) -> None:
    with EmbeddedStores(tmp_path, StoreUrls()) as owner:
        urls = owner.start()
        with pytest.raises(DataDirectoryInUseError, match=f"pid {os.getpid()}"):
            EmbeddedStores(tmp_path, StoreUrls()).start()
        assert EmbeddedStores(tmp_path, StoreUrls()).start(attach=True) == urls


def test_only_stores_without_a_url_are_embedded(tmp_path: Path) -> None:
    given = StoreUrls(database_url="postgresql+asyncpg://elsewhere/db", mongo_url="mongodb://x")
    with EmbeddedStores(tmp_path, given) as stores:
        urls = stores.start()
        assert [server.name for server in stores.servers] == ["redis"]
    assert urls.database_url == given.database_url
    assert urls.redis_url is not None
    assert urls.redis_url.startswith("redis://127.0.0.1:")


def _server_pids(data_dir: Path) -> dict[str, int]:
    return {
        record.stem: json.loads(record.read_text())["pid"]
        for record in (data_dir / "run").glob("*.json")
    }


def test_a_killed_gateway_is_recovered_by_the_next_one(data_dir: Path, launch: Launch) -> None:
    first = launch("first.log")
    assert first.data("{ service { name } }") == {"service": {"name": "polyglot-gateway"}}

    # While it serves, a second gateway on the same directory is refused in one clear line...
    second = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", str(own_port())],
        env=environment(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert f"is in use by another gateway (pid {first.process.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    # ...while a seed attaches to its servers.
    seeded = gateway_command(data_dir, "seed", "--reports", "25", "--no-progress")
    assert seeded.returncode == 0, seeded.stderr
    assert "25 reports" in seeded.stdout

    orphans = _server_pids(data_dir)
    assert set(orphans) == {"postgres", "mongodb", "redis"}
    # Its watchdog is killed with it, as when a whole group of processes is, so that the
    # servers are left for the next gateway to find (test_shutdown.py has the watchdog).
    for child in psutil.Process(first.process.pid).children():
        if "gateway.embedded.watchdog" in " ".join(child.cmdline()):
            child.kill()
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    assert all(psutil.pid_exists(pid) for pid in orphans.values())

    third = launch("third.log")
    assert not any(psutil.pid_exists(pid) for pid in orphans.values())
    assert set(_server_pids(data_dir)) == {"postgres", "mongodb", "redis"}
    assert "stopping orphaned embedded postgres" in third.log.read_text()
    endpoints = json.loads((data_dir / "endpoints.json").read_text())
    assert asyncio.run(_count_reports(endpoints["database_url"])) == 25

    # A clean stop takes the servers down with the gateway.
    running = _server_pids(data_dir)
    third.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert third.process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in third.log.read_text()
    assert not any(psutil.pid_exists(pid) for pid in running.values())
    assert _server_pids(data_dir) == {}


async def _count_reports(database_url: str) -> int:
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        count = await connection.scalar(text("SELECT count(*) FROM reports"))
    await engine.dispose()
    return int(count or 0)


# Gateways on a data directory of their own, and whatever they leave killed afterwards.
data_dir = processes.data_dir
launch = processes.launch


@pytest.fixture(params=["postgres", "mongodb", "redis"])
async def store_to_stop(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[str, Settings, EmbeddedStores]]:
    """Settings whose store ``request.param`` runs on a server of its own, to be stopped."""
    field = {"postgres": "database_url", "mongodb": "mongo_url", "redis": "redis_url"}[
        request.param
    ]
    wanted = StoreUrls(
        **{name: getattr(settings, name) for name in ("database_url", "mongo_url", "redis_url")}
        | {field: None}
    )
    with EmbeddedStores(tmp_path / "own", wanted) as own:
        urls = own.start()
        yield (
            request.param,
            settings.model_copy(update={field: getattr(urls, field), "readiness_timeout": 3.0}),
            own,
        )


# The store stopped is a server of the test's own, whichever stores the run is given.
@pytest.mark.servers_of_its_own
async def test_readyz_names_the_store_that_stopped(
    store_to_stop: tuple[str, Settings, EmbeddedStores], caplog: pytest.LogCaptureFixture
) -> None:
    """The answer names the store and the kind of failure; the log says why, in the
    driver's words, once however often the probe asks."""
    name, settings, own = store_to_stop
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            healthy = await client.get("/readyz")
            assert healthy.status_code == 200, healthy.json()
            own.stop()
            with caplog.at_level(logging.WARNING, logger="gateway.health"):
                responses = [await client.get("/readyz") for _ in range(3)]
    body = responses[-1].json()
    assert responses[-1].status_code == 503, body
    assert body["status"] == "unavailable"
    assert body["failing"] == [name]
    assert body["stores"][name] != "ok"
    assert all(body["stores"][other] == "ok" for other in body["stores"] if other != name)
    logged = [record.getMessage() for record in caplog.records if record.name == "gateway.health"]
    assert len(logged) == 1, logged
    began, _, why = logged[0].partition(" (")
    assert began == f"not ready: {name} does not answer"
    # The driver's kind of error and its message, which no answer carries (unless it is
    # the gateway's own: no answer in time).
    _, _, message = why.removesuffix(")").partition(": ")
    assert message
    if not message.startswith("no answer within"):
        assert all(message not in response.text for response in responses)


def test_an_existing_data_directory_keeps_its_mode(tmp_path: Path) -> None:
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    existing.chmod(0o1777)
    with EmbeddedStores(existing, StoreUrls(database_url="x", mongo_url="y")) as stores:
        stores.start()
    assert existing.stat().st_mode & 0o7777 == 0o1777


def test_a_port_is_handed_out_once() -> None:
    # The kernel offers a closed probe's port again: among this many, it offers some twice.
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


@pytest.mark.parametrize("server_type", [MongoServer, ValkeyServer])
async def test_a_server_whose_port_is_taken_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server_type: type[EmbeddedServer]
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(process, "free_port", lambda: next(ports, None) or free_port())
        server = server_type(tmp_path)
        url = server.start()
        try:
            assert server.port not in {None, taken}
            if server_type is MongoServer:
                client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                    url, serverSelectionTimeoutMS=5000
                )
                assert (await client.admin.command("ping"))["ok"] == 1
                await client.close()
            else:
                async with Redis.from_url(url) as redis:
                    assert await redis.ping()
        finally:
            server.stop()


@pytest.mark.servers_of_its_own
async def test_an_embedded_store_that_dies_is_started_again(
    settings: Settings, tmp_path: Path
) -> None:
    own = settings.model_copy(update={"redis_url": None, "data_dir": tmp_path / "own"})
    query = {"query": "{ topReports { title } }"}
    async with lifespan_client(create_app(own)) as client:
        assert "errors" not in (await client.post("/graphql", json=query)).json()
        killed = recorded_process(own.data_dir, "redis")
        assert killed is not None
        killed.kill()

        async def answered_by_another() -> bool:
            body = (await client.post("/graphql", json=query)).json()
            again = recorded_process(own.data_dir, "redis")
            return "errors" not in body and again is not None and again.pid != killed.pid

        await eventually(answered_by_another)


@pytest.mark.skipif(os.geteuid() != 0, reason="clusters are shared only when root runs them")
def test_a_shared_cluster_goes_once_its_data_directory_is_gone(tmp_path: Path) -> None:
    # pytest's directories are private to root: the cluster goes to the shared place.
    first = PostgresServer(tmp_path / "first")
    cluster = first.cluster_dir
    assert cluster.is_relative_to(SHARED_ROOT)
    first.start()
    first.stop()
    kept = PostgresServer(tmp_path / "kept")
    assert cluster.exists()  # its data directory is still there
    shutil.rmtree(tmp_path / "first")
    PostgresServer(tmp_path / "next")
    assert not cluster.exists()
    assert kept.cluster_dir != cluster


def test_a_shared_cluster_removed_by_another_gateway_meanwhile_is_passed_over(
    tmp_path: Path,
) -> None:
    first = PostgresServer(tmp_path / "first")
    shutil.rmtree(tmp_path / "first")
    # What another gateway's sweep leaves behind between this one's listing and reading
    # (the sweep of a gateway in a test running meanwhile may have removed it already).
    vanished = first.cluster_dir.with_suffix(OWNER_SUFFIX)
    vanished.unlink(missing_ok=True)
    vanished.symlink_to(tmp_path / "removed meanwhile")
    try:
        PostgresServer(tmp_path / "next")
    finally:
        vanished.unlink(missing_ok=True)


def _system_identifier(cluster: Path) -> bytes:
    # pg_control begins with the identifier that initdb draws at random for each cluster.
    return (cluster / "global" / "pg_control").read_bytes()[:8]


def test_each_new_cluster_is_a_copy_of_one_made_once_by_initdb(tmp_path: Path) -> None:
    first = PostgresServer(tmp_path / "first")
    second = PostgresServer(tmp_path / "second")
    for server in (first, second):
        server.start()
        server.stop()
    pristine = pristine_cluster_path(first.account)
    assert (
        _system_identifier(first.cluster_dir)
        == _system_identifier(second.cluster_dir)
        == _system_identifier(pristine)
    )
    if first.account is not None:
        # The copy is the server's own, as the cluster initdb made for it would be.
        owners = {path.stat().st_uid for path in first.cluster_dir.rglob("*")}
        assert owners == {first.account.uid}


@pytest.fixture
def pristine_of_its_own(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A place of this test's own for the cluster fresh from initdb, where the servers'
    account reaches it."""
    pristine = SHARED_ROOT / "pristine" / f"test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(postgres, "pristine_cluster_path", lambda account: pristine)
    yield pristine
    for made in (pristine, making_path(pristine)):
        shutil.rmtree(made, ignore_errors=True)
    pristine.with_name(f"{pristine.name}.lock").unlink(missing_ok=True)


def test_what_an_interrupted_first_start_left_is_made_again(
    tmp_path: Path, pristine_of_its_own: Path
) -> None:
    # An initdb killed halfway, and a copy of a cluster killed halfway.
    making = making_path(pristine_of_its_own)
    making.mkdir(parents=True)
    (making / "PG_VERSION").write_text("18\n")
    server = PostgresServer(tmp_path / "data")
    copying = making_path(server.cluster_dir)
    copying.mkdir(parents=True)
    (copying / "PG_VERSION").write_text("18\n")
    server.start()
    server.stop()
    assert not making.exists()
    assert not copying.exists()
    assert _system_identifier(server.cluster_dir) == _system_identifier(pristine_of_its_own)


# A gateway's first start as far as its system account: each waits for the others to be
# ready, then looks the account up or makes it.
FIRST_START = """
import pwd, sys, time
from pathlib import Path
from gateway.embedded import postgres
postgres.SYSTEM_USER = sys.argv[1]
print("ready", flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
print(postgres._ensure_system_account().uid, pwd.getpwnam(sys.argv[1]).pw_uid)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the system account is made only for root")
def test_gateways_starting_at_once_make_one_system_account(tmp_path: Path) -> None:
    name = f"gw-test-{os.getpid()}"
    go = tmp_path / "go"
    starting = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_START, name, str(go)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    try:
        for process in starting:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        go.touch()
        seen = [process.communicate(timeout=60)[0].split() for process in starting]
        made = str(pwd.getpwnam(name).pw_uid)
        # Each went on with the account that exists, not one that another replaced.
        assert seen == [[made, made]] * len(starting)
    finally:
        for command in ("userdel", "groupdel"):
            program = shutil.which(command) or f"/usr/sbin/{command}"
            subprocess.run([program, name], check=False, capture_output=True)
