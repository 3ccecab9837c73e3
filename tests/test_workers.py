"""``gateway serve --workers N`` as an operator runs it: one parent that owns the embedded
servers, workers that share its port, a worker that dies, a parent that is stopped or killed."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import psutil
import pytest

from core.settings import Settings
from core.store_urls import StoreUrls
from gateway.worker_process import TEMPLATE_NAME, WORKER_NAME
from gateway.workers import SharedMetrics, Template, Workers, _listen
from tests import processes
from tests.processes import (
    GONE_TIMEOUT,
    READY_TIMEOUT,
    SERVER_NAMES,
    TOP_REPORTS,
    Gateway,
    alive,
    all_gone,
    recorded_servers,
    wait_for,
    watchdogs_of,
)

# The fixtures of the single-process tests: gateways on a data directory of their own.
data_dir = processes.data_dir
launch = processes.launch

WORKERS = 2
STARTED = "Application startup complete."
# Requests per batch: each on a connection kept open until it is known which worker
# accepted it, fewer than a worker's keep-alive time could close.
BATCH = 20
SERVICE = "{ service { name } }"


class Cluster:
    """A gateway started with ``--workers``, and the worker processes it has started."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.parent = psutil.Process(gateway.process.pid)
        self.seen: set[psutil.Process] = set()

    def template(self) -> psutil.Process:
        [template] = [child for child in self.parent.children() if child.name() == TEMPLATE_NAME]
        return template

    def workers(self, starts: int = WORKERS) -> list[psutil.Process]:
        """The workers, once there have been ``starts`` starts of workers since the launch."""
        wait_for(
            lambda: self.gateway.log.read_text().count(STARTED) >= starts,
            f"{starts} starts of workers",
            READY_TIMEOUT,
        )
        workers = [
            child for child in self.parent.children(recursive=True) if child.name() == WORKER_NAME
        ]
        self.seen.update(workers)
        return workers

    def served_by(self, requests: int, *, at_once: bool = False) -> Counter[int]:
        """Send ``requests`` queries, each on a new connection: how many each worker served.
        In batches, each answer read before the next connection opens, or ``at_once``: the
        batch's connections all opened and sent before any answer is read, as a load
        generator opens its connections."""
        workers = self.workers()
        served: Counter[int] = Counter()
        for _ in range(requests // BATCH):
            if at_once:
                connections = [
                    self._served(sent) for sent in [self.query(SERVICE) for _ in range(BATCH)]
                ]
            else:
                connections = [self._served(self.query(SERVICE)) for _ in range(BATCH)]
            # Answered, so accepted, and still open: kept alive by the worker that accepted it.
            ports = {_client_port(connection) for connection in connections}
            for worker in workers:
                served[worker.pid] += sum(
                    1
                    for accepted in worker.net_connections("tcp")
                    if accepted.raddr and accepted.raddr.port in ports
                )
            for connection in connections:
                connection.close()
        return served

    def query(self, document: str) -> http.client.HTTPConnection:
        """Send a query on a new connection; its answer is left to read."""
        connection = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=60)
        connection.request(
            "POST",
            "/graphql",
            body=json.dumps({"query": document}),
            headers={"content-type": "application/json"},
        )
        return connection

    def _served(self, connection: http.client.HTTPConnection) -> http.client.HTTPConnection:
        """Read the answer: one at a time, so that each connection is a worker's to take."""
        response = connection.getresponse()
        assert json.loads(response.read())["data"] == {"service": {"name": "polyglot-gateway"}}
        return connection

    def accepted(self, connection: http.client.HTTPConnection) -> bool:
        port = _client_port(connection)
        return any(
            accepted.raddr and accepted.raddr.port == port
            for worker in self.workers()
            for accepted in worker.net_connections("tcp")
        )


def _client_port(connection: http.client.HTTPConnection) -> int:
    assert connection.sock is not None
    port: int = connection.sock.getsockname()[1]
    return port


@contextmanager
def _clusters(launch: processes.Launch) -> Iterator[Callable[..., Cluster]]:
    """Start ``serve --workers 2``; workers left running are killed at the end."""
    clusters: list[Cluster] = []

    def start(**settings: str) -> Cluster:
        clusters.append(Cluster(launch("gateway.log", "--workers", str(WORKERS), **settings)))
        clusters[-1].workers()
        return clusters[-1]

    try:
        yield start
    finally:
        leftovers = [worker for started in clusters for worker in started.seen]
        for worker in leftovers:
            if alive(worker):
                worker.kill()
        psutil.wait_procs(leftovers, timeout=10)


@pytest.fixture
def cluster(launch: processes.Launch) -> Iterator[Callable[..., Cluster]]:
    with _clusters(launch) as start:
        yield start


# The tests that leave the gateway serving share one: a start of the gateway, its embedded
# servers and its workers costs some 4 s of processor time. Run by one process of a
# parallel run (pytest-xdist's --dist loadgroup), they start it once.
on_one_cluster = pytest.mark.xdist_group("workers-one-cluster")


@pytest.fixture(scope="module")
def running_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("cluster")
    with processes.launching(logs / "data", logs) as launch, _clusters(launch) as start:
        yield start()


@on_one_cluster
def test_the_parent_alone_starts_the_embedded_servers_and_migrates(
    running_cluster: Cluster,
) -> None:
    started = running_cluster
    processes = [started.parent, *started.parent.children(recursive=True)]
    postgres = {process.pid for process in processes if process.name() == "postgres"}
    postmasters = [
        process
        for process in processes
        if process.name() == "postgres" and process.ppid() not in postgres
    ]
    assert [postmaster.parent() for postmaster in postmasters] == [started.parent]
    assert set(recorded_servers(started.gateway.data_dir)) == SERVER_NAMES
    assert all(server.parent() == started.parent for server in started.gateway.servers.values())
    [watchdog] = watchdogs_of(started.gateway.data_dir)
    assert watchdog.parent() == started.parent
    log = started.gateway.log.read_text()
    assert log.count("embedded postgres listening") == 1
    assert log.count("Running upgrade  -> 0001") == 1
    # Forked from one template, which imported the application once: not programs of their
    # own, each importing it anew.
    template = started.template()
    for worker in started.workers():
        assert worker.parent() == template
        assert worker.cmdline() == template.cmdline()


@on_one_cluster
def test_every_worker_serves_its_share_of_new_connections(running_cluster: Cluster) -> None:
    served = running_cluster.served_by(200)
    assert sum(served.values()) == 200
    # The kernel hands each connection to one of the workers waiting on the socket: no
    # exact split is promised, but each gets at least half of an even share.
    assert len(served) == WORKERS
    assert min(served.values()) >= 200 / WORKERS / 2, served


@on_one_cluster
def test_a_burst_of_connections_is_spread_over_the_workers(running_cluster: Cluster) -> None:
    served = running_cluster.served_by(BATCH * 4, at_once=True)
    assert len(served) == WORKERS
    assert min(served.values()) >= BATCH * 4 / WORKERS / 4, served


@on_one_cluster
def test_a_killed_worker_is_replaced(running_cluster: Cluster) -> None:
    started = running_cluster
    killed, survivor = started.workers()
    killed.kill()
    wait_for(lambda: not alive(killed), "the worker to die")
    replacement = next(
        worker for worker in started.workers(starts=WORKERS + 1) if worker != survivor
    )
    assert replacement != killed
    assert replacement.parent() == started.template()
    served = started.served_by(100)
    assert set(served) == {survivor.pid, replacement.pid}
    assert min(served.values()) > 0, served
    # The stores were not restarted for it.
    assert all(alive(server) for server in started.gateway.servers.values())


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_parent_finishes_requests_and_stops_everything(
    cluster: Callable[..., Cluster], stop: signal.Signals
) -> None:
    started = cluster(GATEWAY_STORE_TIMEOUT="30")
    gateway = started.gateway
    workers = started.workers()
    template = started.template()
    redis = gateway.servers["redis"]
    # Held up by a Redis that does not answer, the request is still in flight at SIGTERM.
    redis.suspend()
    try:
        in_flight = started.query(TOP_REPORTS)
        wait_for(lambda: started.accepted(in_flight), "a worker to accept the request")
        gateway.process.send_signal(stop)
        wait_for(
            lambda: gateway.log.read_text().count("Shutting down") == WORKERS,
            "the workers to begin shutting down",
        )
    finally:
        redis.resume()
    response = in_flight.getresponse()
    assert response.status == 200
    assert response.getheader("connection") == "close"
    assert json.loads(response.read())["data"] == {"topReports": []}
    in_flight.close()
    assert gateway.process.wait(timeout=GONE_TIMEOUT) == 0
    processes = [*workers, template, *gateway.servers.values()]
    wait_for(lambda: all_gone(processes), "the workers and the embedded servers to stop")
    assert gateway.log.read_text().count("Application shutdown complete.") == WORKERS
    assert watchdogs_of(gateway.data_dir) == []


def test_workers_do_not_outlive_a_killed_parent(cluster: Callable[..., Cluster]) -> None:
    started = cluster()
    gateway = started.gateway
    workers = started.workers()
    template = started.template()
    metrics = Path(template.environ()["PROMETHEUS_MULTIPROC_DIR"])
    assert metrics.is_dir()
    watchdogs = watchdogs_of(gateway.data_dir)
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait()
    # The workers shut down as at a SIGTERM, the template exits, and the watchdog stops
    # the servers.
    wait_for(
        lambda: all_gone([*workers, template, *gateway.servers.values(), *watchdogs]),
        "the workers, the template, the embedded servers and the watchdog to stop",
    )
    assert recorded_servers(gateway.data_dir) == {}
    assert gateway.log.read_text().count("Application shutdown complete.") == WORKERS
    # The workers' metrics, in a directory the parent made, went with them.
    assert not metrics.exists()


def test_a_gateway_whose_template_dies_stops_with_its_workers(
    cluster: Callable[..., Cluster],
) -> None:
    started = cluster()
    gateway = started.gateway
    workers = started.workers()
    # No worker could be replaced any more: the gateway stops rather than serve short.
    started.template().kill()
    assert gateway.process.wait(timeout=GONE_TIMEOUT) == 1
    wait_for(
        lambda: all_gone([*workers, *gateway.servers.values()]),
        "the workers and the embedded servers to stop",
    )
    assert "the process that workers are forked from has exited" in gateway.log.read_text()


def test_one_worker_is_served_by_the_process_itself(launch: processes.Launch) -> None:
    gateway = launch("gateway.log", "--workers", "1")
    assert not any(
        child.name() in {WORKER_NAME, TEMPLATE_NAME}
        for child in psutil.Process(gateway.process.pid).children(recursive=True)
    )
    assert gateway.data(SERVICE) == {"service": {"name": "polyglot-gateway"}}


def test_a_port_another_gateway_serves_is_refused_not_shared() -> None:
    # Listening as another gateway's workers do, sharing their port.
    other = socket.create_server(("127.0.0.1", 0), reuse_port=True)
    port = other.getsockname()[1]
    settings = Settings(host="127.0.0.1", port=port, workers=WORKERS)
    with pytest.raises(OSError, match="in use"):
        _listen(settings)
    other.close()
    listeners = _listen(settings)
    try:
        assert [listener.getsockname()[1] for listener in listeners] == [port] * WORKERS
    finally:
        for listener in listeners:
            listener.close()


class Unstartable(NamedTuple):
    """A configuration no worker can start on, and what a worker that tries says."""

    stores: StoreUrls
    key_set: str | None
    failure: str


@pytest.mark.parametrize(
    "unstartable",
    [
        # Refused by every worker's settings.
        Unstartable(
            StoreUrls(database_url="nosuchdb://", mongo_url="mongodb://", redis_url="redis://"),
            None,
            "the application could not be built",
        ),
        # Accepted by the settings, on stores that nothing answers at (a worker starts on
        # them, and finds out at its first call), but the application's start-up fails.
        Unstartable(
            StoreUrls(
                database_url="postgresql+asyncpg://gateway@127.0.0.1:1/catalogue",
                mongo_url="mongodb://127.0.0.1:1",
                redis_url="redis://127.0.0.1:1/0",
            ),
            "not a key set",
            "Application startup failed.",
        ),
    ],
    ids=["settings refused", "start-up failed"],
)
async def test_a_worker_that_cannot_start_stops_the_gateway_instead_of_being_replaced(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    unstartable: Unstartable,
) -> None:
    if unstartable.key_set is not None:
        (tmp_path / "jwks.json").write_text(unstartable.key_set)
        monkeypatch.setenv("GATEWAY_JWKS_FILE", str(tmp_path / "jwks.json"))
    settings = Settings(host="127.0.0.1", port=0, workers=WORKERS)
    with Template.started(SharedMetrics(tmp_path, own=False)) as template:
        workers = Workers(settings, unstartable.stores, _listen(settings), tmp_path, template)
        assert await workers.run(asyncio.Event()) == 1
    assert template.process.returncode == 0
    # No worker was started again; the second may have been stopped before it failed.
    assert 1 <= capfd.readouterr().err.count(unstartable.failure) <= WORKERS
