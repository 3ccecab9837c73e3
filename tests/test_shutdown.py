"""Stopping ``gateway serve`` as an operator does: SIGTERM with requests in flight, a
request that never finishes, SIGKILL; and commands that attach without owning anything."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.store_urls import StoreUrls
from gateway.embedded import EmbeddedStores
from tests import processes
from tests.processes import (
    GONE_TIMEOUT,
    SERVER_NAMES,
    TOP_REPORTS,
    Launch,
    accepts,
    alive,
    all_gone,
    environment,
    gateway_command,
    recorded_servers,
    wait_for,
    watchdogs_of,
)

# Gateways on a data directory of their own, and whatever they leave killed afterwards.
data_dir = processes.data_dir
launch = processes.launch


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
    wait_for(lambda: all_gone(list(gateway.servers.values())), "the embedded servers to stop")
    assert watchdogs_of(data_dir) == []


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
        wait_for(lambda: not accepts(gateway.port), "the gateway to stop accepting")
        # The client could not know that the server had begun to shut down.
        idle.request("GET", "/healthz")
    finally:
        redis.resume()
    response = idle.getresponse()
    assert response.status == 200
    assert response.getheader("connection") == "close"
    assert in_flight.getresponse().status == 200
    assert gateway.process.wait(timeout=GONE_TIMEOUT) in (0, -signal.SIGTERM)


def test_a_second_ctrl_c_stops_waiting_for_requests_but_not_the_shutdown(
    data_dir: Path, launch: Launch
) -> None:
    gateway = launch(GATEWAY_STORE_TIMEOUT="30")
    redis = gateway.servers["redis"]
    redis.suspend()
    try:
        # Waited for after the first Ctrl-C, as any request in flight.
        in_flight = gateway.send(TOP_REPORTS)
        gateway.process.send_signal(signal.SIGINT)
        wait_for(lambda: "Shutting down" in gateway.log.read_text(), "the shutdown to begin")
        gateway.process.send_signal(signal.SIGINT)
    finally:
        redis.resume()
    assert gateway.process.wait(timeout=GONE_TIMEOUT) in (0, -signal.SIGINT)
    in_flight.close()
    log = gateway.log.read_text()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log
    # Stopped by the gateway itself: its watchdog had nothing left to do.
    wait_for(lambda: all_gone(list(gateway.servers.values())), "the embedded servers to stop")
    assert watchdogs_of(data_dir) == []
    assert "stopping" not in (data_dir / "logs" / "watchdog.log").read_text()


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
    wait_for(lambda: all_gone(list(gateway.servers.values())), "the embedded servers to stop")
    assert watchdogs_of(data_dir) == []
    stuck.close()


def test_the_embedded_servers_do_not_outlive_a_killed_gateway(
    data_dir: Path, launch: Launch
) -> None:
    gateway = launch()
    watchdogs = watchdogs_of(data_dir)
    assert len(watchdogs) == 1
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait()
    wait_for(
        lambda: all_gone([*gateway.servers.values(), *watchdogs]),
        "the watchdog to stop the embedded servers and exit",
    )
    assert recorded_servers(data_dir) == {}
    assert not (data_dir / "endpoints.json").exists()
    assert EmbeddedStores(data_dir, StoreUrls()).owner() is None
    assert "stopping its embedded servers" in (data_dir / "logs" / "watchdog.log").read_text()


def test_a_late_watchdog_leaves_the_servers_of_the_next_gateway_alone(
    data_dir: Path, launch: Launch
) -> None:
    first = launch("first.log")
    [watchdog] = watchdogs_of(data_dir)
    # The watchdog is held back until a new gateway has taken over the directory.
    watchdog.suspend()
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    second = launch("second.log")
    assert "stopping orphaned embedded postgres" in second.log.read_text()
    assert all_gone(list(first.servers.values()))
    watchdog.resume()
    wait_for(lambda: not alive(watchdog), "the first gateway's watchdog to exit")
    assert all(alive(server) for server in second.servers.values())
    assert second.data("{ service { name } }") == {"service": {"name": "polyglot-gateway"}}
    assert "another gateway owns" in (data_dir / "logs" / "watchdog.log").read_text()


def test_a_gateway_restarted_at_once_waits_for_the_watchdog(launch: Launch) -> None:
    first = launch("first.log")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    # As a supervisor does: no pause, so the watchdog is likely still at work.
    second = launch("second.log")
    assert all_gone(list(first.servers.values()))
    assert all(alive(server) for server in second.servers.values())
    assert second.data("{ service { name } }") == {"service": {"name": "polyglot-gateway"}}


def test_commands_that_attach_leave_the_servers_running(data_dir: Path, launch: Launch) -> None:
    gateway = launch()
    migrated = gateway_command(data_dir, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    _seed(data_dir, reports=5)
    # A killed command that attached has nothing to clean up, and nothing cleans up after it.
    killed = subprocess.Popen(
        [sys.executable, "-m", "gateway", "seed", "--reports", "500", "--no-progress"],
        env=environment(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert killed.stderr is not None
    while "using the embedded servers" not in killed.stderr.readline():
        assert killed.poll() is None
    # Only the gateway's own.
    assert len(watchdogs_of(data_dir)) == 1
    killed.kill()
    killed.wait()
    killed.stderr.close()
    time.sleep(2)
    assert all(alive(server) for server in gateway.servers.values())
    assert recorded_servers(data_dir).keys() == SERVER_NAMES
    assert gateway.data("{ service { name } }") == {"service": {"name": "polyglot-gateway"}}


def _seed(data_dir: Path, *, reports: int) -> None:
    seeded = gateway_command(data_dir, "seed", "--reports", str(reports), "--no-progress")
    assert seeded.returncode == 0, seeded.stderr


# A process whose shutdown signal's handler is interrupted, inside its note to the
# shutdown deadline, by a second signal: as a worker's Ctrl-C from the terminal is, by
# its supervisor's SIGTERM a moment later. The trace raises the second signal there.
SECOND_SIGNAL_MID_HANDLER = """
import signal, sys
import uvicorn
from gateway.server import GatewayServer

server = GatewayServer(uvicorn.Config(app=lambda scope, receive, send: None))
signal.signal(signal.SIGUSR1, server.handle_exit)
lines = 0

def inside_set(frame, event, arg):
    global lines
    if event == "line":
        lines += 1
        if lines == 2:
            signal.raise_signal(signal.SIGUSR1)
    return inside_set

sys.settrace(lambda frame, event, arg: inside_set if frame.f_code.co_name == "set" else None)
server.handle_exit(signal.SIGTERM, None)
sys.settrace(None)
assert lines >= 2 and server.should_exit
"""


def test_a_second_signal_during_the_first_one_s_handler_does_not_hang_the_process() -> None:
    # A handler that waited for a lock its interrupted self held would wait for ever.
    finished = subprocess.run(
        [sys.executable, "-c", SECOND_SIGNAL_MID_HANDLER],
        capture_output=True,
        text=True,
        timeout=GONE_TIMEOUT,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
