"""``gateway serve`` and its commands as processes of their own, the way an operator runs
them, for the tests that stop, kill and restart them."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from core.settings import Settings
from tests.ports import own_port

READY_TIMEOUT = 90.0
# Generous bounds for "soon": they catch a process that stays, not a slow machine.
GONE_TIMEOUT = 15.0
TOP_REPORTS = "{ topReports(by: VIEWS, limit: 5) { id } }"
SERVER_NAMES = {"postgres", "mongodb", "redis"}
# One client for what tests send to gateways over loopback: a client loads the system's
# certificate authorities when it is made, which costs more than twenty requests to a
# local gateway, and a starting gateway is asked whether it is ready ten times a second.
# A connection for each request, as a new client would have: a stopping gateway gives an
# idle connection its keep-alive time, and each request may be a different worker's.
LOOPBACK = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


class Gateway:
    """``gateway serve`` as a process of its own, on a data directory and a port of its own,
    with its embedded servers."""

    def __init__(self, data_dir: Path, log: Path, *arguments: str, **settings: str) -> None:
        self.data_dir = data_dir
        self.port = own_port()
        self.log = log
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", *arguments],
                env=environment(data_dir, GATEWAY_PORT=str(self.port), **settings),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.servers: dict[str, psutil.Process] = {}

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if LOOPBACK.get(f"http://127.0.0.1:{self.port}/readyz").status_code == 200:
                    self.servers = recorded_servers(self.data_dir)
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"gateway not ready in {READY_TIMEOUT}s:\n{self.log.read_text()}")

    def kill(self) -> None:
        """Kill the process, unless it has ended."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def data(self, document: str) -> object:
        return data_at(self.port, document)

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
        wait_for(
            lambda: any(
                accepted.raddr and accepted.raddr.port == client_port
                for accepted in psutil.Process(self.process.pid).net_connections("tcp")
            ),
            "the gateway to accept the request",
        )
        return connection


def data_at(port: int, document: str) -> object:
    """The data of ``document``'s answer from the gateway on ``port``."""
    response = LOOPBACK.post(f"http://127.0.0.1:{port}/graphql", json={"query": document})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def environment(data_dir: Path, **settings: str) -> dict[str, str]:
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")
    }
    return environment | {"GATEWAY_DATA_DIR": str(data_dir)} | settings


def store_environment(settings: Settings) -> dict[str, str]:
    """``settings``' stores and data directory, as a process's environment names them."""
    names = ("database_url", "mongo_url", "redis_url", "mongo_database", "data_dir")
    return {f"GATEWAY_{name.upper()}": str(getattr(settings, name)) for name in names}


def recorded_servers(data_dir: Path) -> dict[str, psutil.Process]:
    """The embedded servers recorded in ``data_dir``, as processes that cannot be confused
    with a later process given the same pid."""
    return {
        record.stem: psutil.Process(json.loads(record.read_text())["pid"])
        for record in (data_dir / "run").glob("*.json")
    }


def watchdogs_of(data_dir: Path) -> list[psutil.Process]:
    return [
        process
        for process in psutil.process_iter(["cmdline"])
        if "gateway.embedded.watchdog" in " ".join(process.info["cmdline"] or [])
        and str(data_dir.resolve()) in (process.info["cmdline"] or [])
    ]


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def alive(process: psutil.Process) -> bool:
    try:
        # An exited server that nobody has reaped yet is gone for every purpose here.
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(condition: Callable[[], bool], what: str, timeout: float = GONE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout}s for {what}")
        time.sleep(0.05)


def all_gone(processes: list[psutil.Process]) -> bool:
    return not any(alive(process) for process in processes)


Launch = Callable[..., Gateway]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@contextmanager
def launching(data_dir: Path, logs: Path) -> Iterator[Launch]:
    """Start gateways on ``data_dir``, their logs in ``logs``; whatever they leave running
    is killed at the end."""
    gateways: list[Gateway] = []

    def start(log: str = "gateway.log", *arguments: str, **settings: str) -> Gateway:
        gateways.append(Gateway(data_dir, logs / log, *arguments, **settings))
        gateways[-1].wait_until_ready()
        assert set(gateways[-1].servers) == SERVER_NAMES
        return gateways[-1]

    try:
        yield start
    finally:
        for gateway in gateways:
            gateway.kill()
        leftovers = (
            [*recorded_servers(data_dir).values(), *watchdogs_of(data_dir)]
            if data_dir.exists()
            else []
        )
        for gateway in gateways:
            leftovers += gateway.servers.values()
        for process in leftovers:
            if alive(process):
                process.kill()
        psutil.wait_procs(leftovers, timeout=10)


@pytest.fixture
def launch(data_dir: Path, tmp_path: Path) -> Iterator[Launch]:
    """Start gateways on ``data_dir``; whatever they leave running is killed afterwards."""
    with launching(data_dir, tmp_path) as start:
        yield start


def gateway_command(data_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """A ``gateway`` command on ``data_dir``, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *arguments],
        env=environment(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
