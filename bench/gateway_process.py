"""A gateway (or one of its commands) run as its own process on a data directory, the way
a user runs it: the benchmarks measure that, not an in-process shortcut."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.embedded.process import free_port

READY_TIMEOUT = 120.0


def environment(data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment without its GATEWAY_* variables, plus ``settings``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    chosen = {"DATA_DIR": str(data_dir), "LOG_LEVEL": "warning"} | settings
    return inherited | {f"GATEWAY_{name.upper()}": value for name, value in chosen.items()}


def run_command(data_dir: Path, *arguments: str, **settings: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "gateway", *arguments],
        env=environment(data_dir, **settings),
        check=True,
        stdout=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class ServedGateway:
    port: int
    seconds_to_ready: float
    pid: int


@contextmanager
def serving(data_dir: Path, **settings: str) -> Iterator[ServedGateway]:
    """`gateway serve` until /readyz answers 200; stopped with SIGTERM on exit. Its output
    goes to bench-gateway.log in the data directory."""
    port = free_port()
    started = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "bench-gateway.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
            env=environment(data_dir, **settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield ServedGateway(port, _wait_until_ready(process, port, started), process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _wait_until_ready(process: subprocess.Popen[bytes], port: int, started: float) -> float:
    while time.perf_counter() - started < READY_TIMEOUT:
        if process.poll() is not None:
            raise SystemExit(f"gateway exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise SystemExit("gateway did not become ready")
