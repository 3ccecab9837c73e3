"""Stopping ``gateway serve`` as an operator does: SIGTERM with requests in flight, a
request that never finishes, SIGKILL; and commands that attach without owning anything."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from core.connections import StoreUrls
from gateway.embedded import EmbeddedStores
from gateway.embedded.process import free_port

READY_TIMEOUT = 90.0
# Generous bounds for "soon": they catch a process that stays, not a slow machine.
GONE_TIMEOUT = 15.0
TOP_REPORTS = "{ topReports(by: VIEWS, limit: 5) { id } }"
SERVER_NAMES = {"postgres", "mongodb", "redis"}


class Gateway:
    """``gateway serve`` as a process of its own, on a data directory of its own."""

    def __init__(self, data_dir: Path, log: Path, *arguments: str, **settings: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log = log
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", *arguments],
                env=_environment(data_dir, GATEWAY_PORT=str(self.port), **settings),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.servers: dict[str, psutil.Process] = {}

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz").status_code == 200:
                    self.servers = _servers(self.data_dir)
                    assert set(self.servers) == SERVER_NAMES
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"gateway not ready in {READY_TIMEOUT}s:\n{self.log.read_text()}")

    def data(self, document: str) -> object:
        response = httpx.post(f"http://127.0.0.1:{self.port}/graphql", json={"query": document})
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def send(self, document: str) -> http.client.HTTPConnection:
        """Send a query without waiting for its answer; return once the gateway has it."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request(
            "POST",
            "/graphql",
            body=json.dumps({"query": document}),
            headers={"content-type": "application/json"},
        )
        assert connection.sock is not None
        client_port = connection.sock.getsockname()[1]
        # Accepted by the gateway itself, not only queued by the kernel.
        _wait_for(
            lambda: any(
                accepted.raddr and accepted.raddr.port == client_port
                for accepted in psutil.Process(self.process.pid).net_connections("tcp")
            ),
            "the gateway to accept the request",
        )
        return connection


def _environment(data_dir: Path, **settings: str) -> dict[str, str]:
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")
    }
    return environment | {"GATEWAY_DATA_DIR": str(data_dir)} | settings


def _servers(data_dir: Path) -> dict[str, psutil.Process]:
    """The embedded servers recorded in ``data_dir``, as processes that cannot be confused
    with a later process given the same pid."""
    return {
        record.stem: psutil.Process(json.loads(record.read_text())["pid"])
        for record in (data_dir / "run").glob("*.json")
    }


def _watchdogs(data_dir: Path) -> list[psutil.Process]:
    return [
        process
        for process in psutil.process_iter(["cmdline"])
        if "gateway.embedded.watchdog" in " ".join(process.info["cmdline"] or [])
        and str(data_dir.resolve()) in (process.info["cmdline"] or [])
    ]


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _alive(process: psutil.Process) -> bool:
    try:
        # An exited server that nobody has reaped yet is gone for every purpose here.
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = GONE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout}s for {what}")
        time.sleep(0.05)


def _all_gone(processes: list[psutil.Process]) -> bool:
    return not any(_alive(process) for process in processes)


Launch = Callable[..., Gateway]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def launch(data_dir: Path, tmp_path: Path) -> Iterator[Launch]:
    """Start gateways on ``data_dir``; whatever they leave running is killed afterwards."""
    gateways: list[Gateway] = []

    def start(log: str = "gateway.log", *arguments: str, **settings: str) -> Gateway:
        gateways.append(Gateway(data_dir, tmp_path / log, *arguments, **settings))
        gateways[-1].wait_until_ready()
        return gateways[-1]

    try:
        yield start
    finally:
        for gateway in gateways:
            if gateway.process.poll() is None:
                gateway.process.kill()
                gateway.process.wait()
        leftovers = (
            [*_servers(data_dir).values(), *_watchdogs(data_dir)] if data_dir.exists() else []
        )
        for gateway in gateways:
            leftovers += gateway.servers.values()
        for process in leftovers:
            if _alive(process):
                process.kill()
        psutil.wait_procs(leftovers, timeout=10)


def test_a_request_in_flight_at_sigterm_completes(data_dir: Path, launch: Launch) -> None:
    gateway = launch(GATEWAY_STORE_TIMEOUT="30")
    _seed(data_dir, reports=10)
    expected = gateway.data(TOP_REPORTS)
    assert expected != {"topReports": []}
    redis = gateway.servers["redis"]
    # A Redis that does not answer for a while: the request waits for it, as it would for
    # a slow store, and is still waiting when the signal comes.
    redis.suspend()
    try:
        in_flight = gateway.send(TOP_REPORTS)
        gateway.process.send_signal(signal.SIGTERM)
        time.sleep(1)
    finally:
        redis.resume()
    response = in_flight.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["data"] == expected
    assert gateway.process.wait(timeout=GONE_TIMEOUT) in (0, -signal.SIGTERM)
    # Stopped by the gateway itself, which then released its watchdog.
    assert "Application shutdown complete" in gateway.log.read_text()
    _wait_for(lambda: _all_gone(list(gateway.servers.values())), "the embedded servers to stop")
    assert _watchdogs(data_dir) == []


def test_a_request_sent_between_requests_as_sigterm_comes_is_answered(
    launch: Launch,
) -> None:
    gateway = launch(GATEWAY_STORE_TIMEOUT="30")
    idle = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    idle.request("GET", "/healthz")
    assert idle.getresponse().read()
    redis = gateway.servers["redis"]
    # A request in flight keeps the gateway shutting down, rather than gone, meanwhile.
    redis.suspend()
    try:
        in_flight = gateway.send(TOP_REPORTS)
        gateway.process.send_signal(signal.SIGTERM)
        _wait_for(lambda: not _accepts(gateway.port), "the gateway to stop accepting")
        # The client could not know that the server had begun to shut down.
        idle.request("GET", "/healthz")
    finally:
        redis.resume()
    response = idle.getresponse()
    assert response.status == 200
    assert response.getheader("connection") == "close"
    assert in_flight.getresponse().status == 200
    assert gateway.process.wait(timeout=GONE_TIMEOUT) in (0, -signal.SIGTERM)


def test_a_request_stuck_past_the_shutdown_timeout_does_not_keep_the_gateway(
    data_dir: Path, launch: Launch
) -> None:
    gateway = launch(GATEWAY_SHUTDOWN_TIMEOUT="1", GATEWAY_STORE_TIMEOUT="30")
    gateway.servers["redis"].suspend()
    stuck = gateway.send(TOP_REPORTS)
    gateway.process.send_signal(signal.SIGTERM)
    # Cut off at the timeout, the request still gets a coded GraphQL answer.
    answer = stuck.getresponse()
    assert answer.status == 503
    assert json.loads(answer.read())["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    gateway.process.wait(timeout=GONE_TIMEOUT)
    # Including the Redis that never woke up.
    _wait_for(lambda: _all_gone(list(gateway.servers.values())), "the embedded servers to stop")
    assert _watchdogs(data_dir) == []
    stuck.close()


def test_the_embedded_servers_do_not_outlive_a_killed_gateway(
    data_dir: Path, launch: Launch
) -> None:
    gateway = launch()
    watchdogs = _watchdogs(data_dir)
    assert len(watchdogs) == 1
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait()
    _wait_for(
        lambda: _all_gone([*gateway.servers.values(), *watchdogs]),
        "the watchdog to stop the embedded servers and exit",
    )
    assert _servers(data_dir) == {}
    assert not (data_dir / "endpoints.json").exists()
    assert EmbeddedStores(data_dir, StoreUrls()).owner() is None
    assert "stopping its embedded servers" in (data_dir / "logs" / "watchdog.log").read_text()


def test_a_late_watchdog_leaves_the_servers_of_the_next_gateway_alone(
    data_dir: Path, launch: Launch
) -> None:
    first = launch("first.log")
    [watchdog] = _watchdogs(data_dir)
    # The watchdog is held back until a new gateway has taken over the directory.
    watchdog.suspend()
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    second = launch("second.log")
    assert "stopping orphaned embedded postgres" in second.log.read_text()
    assert _all_gone(list(first.servers.values()))
    watchdog.resume()
    _wait_for(lambda: not _alive(watchdog), "the first gateway's watchdog to exit")
    assert all(_alive(server) for server in second.servers.values())
    assert second.data("{ service { name } }") == {"service": {"name": "polyglot-gateway"}}
    assert "another gateway owns" in (data_dir / "logs" / "watchdog.log").read_text()


def test_a_gateway_restarted_at_once_waits_for_the_watchdog(launch: Launch) -> None:
    first = launch("first.log")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    # As a supervisor does: no pause, so the watchdog is likely still at work.
    second = launch("second.log")
    assert _all_gone(list(first.servers.values()))
    assert all(_alive(server) for server in second.servers.values())
    assert second.data("{ service { name } }") == {"service": {"name": "polyglot-gateway"}}


def test_commands_that_attach_leave_the_servers_running(data_dir: Path, launch: Launch) -> None:
    gateway = launch()
    migrated = gateway_command(data_dir, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    _seed(data_dir, reports=5)
    # A killed command that attached has nothing to clean up, and nothing cleans up after it.
    killed = subprocess.Popen(
        [sys.executable, "-m", "gateway", "seed", "--reports", "500", "--no-progress"],
        env=_environment(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert killed.stderr is not None
    while "using the embedded servers" not in killed.stderr.readline():
        assert killed.poll() is None
    # Only the gateway's own.
    assert len(_watchdogs(data_dir)) == 1
    killed.kill()
    killed.wait()
    killed.stderr.close()
    time.sleep(2)
    assert all(_alive(server) for server in gateway.servers.values())
    assert _servers(data_dir).keys() == SERVER_NAMES
    assert gateway.data("{ service { name } }") == {"service": {"name": "polyglot-gateway"}}


def gateway_command(data_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """A ``gateway`` command on ``data_dir``, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *arguments],
        env=_environment(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _seed(data_dir: Path, *, reports: int) -> None:
    seeded = gateway_command(data_dir, "seed", "--reports", str(reports), "--no-progress")
    assert seeded.returncode == 0, seeded.stderr
