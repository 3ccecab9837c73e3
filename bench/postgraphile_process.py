"""PostGraphile 4 or 5 served as one Node process over a database, as its users run it in
production: the peers that bench/peers.py compares the gateway with."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.installs import local_node, npm_folder, system_node
from gateway.embedded.process import free_port

READY_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class ServedPeer:
    port: int
    pid: int


def _command(version: int, database_url: str, port: int) -> list[str]:
    folder = npm_folder(f"v{version}")
    # Version 4 runs on the machine's Node; version 5 needs Node 22 or later, which its
    # folder installs beside it.
    node = system_node() if version == 4 else local_node(folder)
    return [str(node), str(folder / "server.js"), database_url, str(port)]


@contextmanager
def serving_postgraphile(version: int, database_url: str, log: Path) -> Iterator[ServedPeer]:
    """PostGraphile ``version`` until it answers a query; stopped on exit. Its output goes
    to ``log``."""
    port = free_port()
    command = _command(version, database_url, port)
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            env=os.environ | {"NODE_ENV": "production"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_ready(process, port)
        yield ServedPeer(port, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], port: int) -> None:
    started = time.perf_counter()
    while time.perf_counter() - started < READY_TIMEOUT:
        if process.poll() is not None:
            raise RuntimeError(f"PostGraphile exited with {process.returncode}")
        try:
            response = httpx.post(
                f"http://127.0.0.1:{port}/graphql", json={"query": "{ __typename }"}
            )
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("PostGraphile did not answer")
