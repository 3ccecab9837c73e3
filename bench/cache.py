"""The response cache against the ceiling of returning bytes, on the nested query.

Seeds a catalogue on embedded servers, then serves, one process each and in turn:

- ``ceiling``: a bare Starlette route on uvicorn (uvloop, httptools) answering every
  request with the same bytes, the gateway's answer to the query: what no cache can beat;
- ``memory hits``: the gateway, answering from its own memory in front of Redis;
- ``redis hits``: the gateway with no memory tier, every answer read from Redis;
- ``uncached``: the gateway with the response cache off, every request executed.

Each is driven with wrk (32 connections by default) sending the relational nested query
over 100 reports. Prints requests per second, p50/p99 latency, the serving process's CPU
per request and each variant against the ceiling. With ``--rounds R``, R passes (every
other one reversed) and the medians of the ratios.

    python -m bench.cache [--reports 1000] [--seconds 10] [--clients 32] [--rounds 3]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from bench import wrk
from bench.gateway_process import run_command, serving
from bench.installs import apt_packages
from bench.peers import GATEWAY_NESTED, VARIABLES
from gateway.embedded.process import free_port

CEILING = "ceiling"
VARIANTS = {
    "memory hits": {},
    "redis hits": {"cache_memory_bytes": "0"},
    "uncached": {"response_cache": "false"},
}
SETTINGS = {"counter_snapshot_interval": "0"}
BODY_FILE = "GATEWAY_BENCH_BODY"


def ceiling_app() -> object:
    """The bare route, answering with the bytes of the file named by GATEWAY_BENCH_BODY."""
    from starlette.applications import Starlette  # noqa: PLC0415 - in the served process
    from starlette.responses import Response  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    body = Path(os.environ[BODY_FILE]).read_bytes()

    async def answer(_: object) -> Response:
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/graphql", answer, methods=["POST"])])


@contextmanager
def _ceiling(body: bytes, directory: Path) -> Iterator[tuple[int, int]]:
    path = directory / "ceiling-body.json"
    path.write_bytes(body)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "bench.cache:ceiling_app",
         "--port", str(port), "--http", "httptools", "--loop", "uvloop",
         "--no-access-log", "--log-level", "warning"],
        env={**os.environ, BODY_FILE: str(path)},
    )  # fmt: skip
    try:
        for _ in range(500):
            try:
                httpx.post(f"http://127.0.0.1:{port}/graphql", content=b"{}")
                break
            except httpx.TransportError:
                time.sleep(0.02)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def _load(port: int, pid: int, clients: int, seconds: float) -> tuple[wrk.Load, float]:
    url = f"http://127.0.0.1:{port}/graphql"
    body = {"query": GATEWAY_NESTED, "variables": VARIABLES}
    wrk.run(url, body, clients=clients, seconds=min(3.0, seconds))  # warm-up, and the fill
    process = psutil.Process(pid)
    before = sum(process.cpu_times()[:2])
    load = wrk.run(url, body, clients=clients, seconds=seconds)
    cpu = sum(process.cpu_times()[:2]) - before
    return load, cpu * 1000 / max(load.requests, 1)


def main() -> None:
    parser = wrk.load_options(
        __doc__, reports=1000, seconds=10.0, rounds=1, passes_over="the servers"
    )
    arguments = parser.parse_args()
    apt_packages("wrk")
    data_dir = Path(tempfile.mkdtemp(prefix="gateway-bench-cache-"))
    ratios: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        run_command(data_dir, "seed", "--reports", str(arguments.reports), "--no-progress")
        with serving(data_dir, **SETTINGS) as gateway:
            answer = httpx.post(
                f"http://127.0.0.1:{gateway.port}/graphql",
                json={"query": GATEWAY_NESTED, "variables": VARIABLES},
                headers={"cache-control": "no-cache"},
            )
            body = answer.content
        print(f"nested query, {len(body)} bytes, {arguments.clients} connections, "
              f"{arguments.seconds:g}s per run")  # fmt: skip
        print(f"{'round':>5} {'server':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'CPU ms/req':>11} {'x ceiling':>10}")  # fmt: skip
        names = [CEILING, *VARIANTS]
        for index in range(arguments.rounds):
            order = names if index % 2 == 0 else names[::-1]
            figures: dict[str, tuple[wrk.Load, float]] = {}
            for name in order:
                if name == CEILING:
                    with _ceiling(body, data_dir) as (port, pid):
                        figures[name] = _load(port, pid, arguments.clients, arguments.seconds)
                else:
                    with serving(data_dir, **SETTINGS, **VARIANTS[name]) as gateway:
                        figures[name] = _load(
                            gateway.port, gateway.pid, arguments.clients, arguments.seconds
                        )
            ceiling = figures[CEILING][0].throughput
            for name in names:
                load, cpu = figures[name]
                ratio = load.throughput / ceiling
                if name in ratios:
                    ratios[name].append(ratio)
                print(f"{index + 1:>5} {name:<12} {load.throughput:>9.0f} {load.p50_ms:>8.2f} "
                      f"{load.p99_ms:>8.2f} {cpu:>11.3f} {ratio:>10.3f}"
                      + (f"  ({load.errors} errors)" if load.errors else ""))  # fmt: skip
        print("against the ceiling, median over the rounds (range):")
        for name, values in ratios.items():
            print(f"  {name:<12} {statistics.median(values):.3f}x "
                  f"({min(values):.3f}-{max(values):.3f})")  # fmt: skip
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
