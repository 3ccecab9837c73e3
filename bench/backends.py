"""The nested query on each relational backend, in one run: PostgreSQL, MariaDB, SQLite.

For each backend: a data directory of its own (MongoDB and Redis embedded in it, as in the
zero-configuration mode), seeded by `gateway seed`; then one gateway process on it, sent
the relational nested query (bench/peers.py's) by wrk with C connections. Prints requests
per second, wrk's p50/p99, the gateway's CPU per request, and the round trips per store of
one request, for 1 and for 100 reports (the same for both: no N+1 on any backend).

PostgreSQL is the gateway's embedded server (18), MariaDB the distribution's (installed
with apt-get when missing, as root), started for the run, SQLite a file in the data
directory.

    python -m bench.backends [--reports 2000] [--seconds 10] [--clients 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench.cpu import own_seconds
from bench.gateway_process import run_command, serving
from bench.installs import apt_packages
from bench.peers import GATEWAY_NESTED, GATEWAY_SETTINGS, VARIABLES
from bench.system_mariadb import running_server
from bench.wrk import load_options, run

BACKENDS = ("postgresql", "mysql", "sqlite")


@dataclass(frozen=True)
class Result:
    backend: str
    throughput: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float
    round_trips: dict[int, dict[str, int]]


def _settings(data_dir: Path, url: str | None) -> dict[str, str]:
    """The gateway's settings on ``data_dir``, with the database at ``url`` (None: the data
    directory's embedded PostgreSQL)."""
    return GATEWAY_SETTINGS | ({"database_url": url} if url else {})


def _seed(data_dir: Path, url: str | None, reports: int) -> None:
    run_command(
        data_dir, "seed", "--reports", str(reports), "--no-progress", **_settings(data_dir, url)
    )


def _round_trips(client: httpx.Client, first: int) -> dict[str, int]:
    response = client.post(
        "/graphql",
        json={"query": GATEWAY_NESTED, "variables": {"first": first}},
        headers={"x-gateway-round-trips": "1"},
    )
    body = response.json()
    assert "errors" not in body, body
    trips: dict[str, int] = body["extensions"]["roundTrips"]
    return trips


def _measure(data_dir: Path, backend: str, url: str | None, clients: int, seconds: float) -> Result:
    with serving(data_dir, **_settings(data_dir, url)) as gateway:
        url = f"http://127.0.0.1:{gateway.port}"
        with httpx.Client(base_url=url, timeout=60) as client:
            trips = {first: _round_trips(client, first) for first in (1, 100)}
        body = {"query": GATEWAY_NESTED, "variables": VARIABLES}
        run(f"{url}/graphql", body, clients=clients, seconds=2)  # warm up
        process = psutil.Process(gateway.pid)
        before = own_seconds(process)
        load = run(f"{url}/graphql", body, clients=clients, seconds=seconds)
        cpu = own_seconds(process) - before
    return Result(
        backend,
        load.throughput,
        load.p50_ms,
        load.p99_ms,
        load.errors,
        1000 * cpu / max(load.requests, 1),
        trips,
    )


def _row(result: Result) -> str:
    trips = "  ".join(
        f"{first}: " + " ".join(f"{store} {count}" for store, count in counts.items())
        for first, counts in result.round_trips.items()
    )
    return (
        f"{result.backend:<11} {result.throughput:>8.1f} {result.p50_ms:>8.1f} "
        f"{result.p99_ms:>8.1f} {result.errors:>6} {result.cpu_ms:>10.2f}   {trips}"
    )


def main() -> None:
    parser = load_options(__doc__, reports=2000, seconds=10.0, rounds=2, passes_over="the backends")
    arguments = parser.parse_args()
    apt_packages()
    root = Path(tempfile.mkdtemp(prefix="gateway-backends-"))
    # MariaDB's server runs as its own account, which must reach its directory in here.
    root.chmod(0o755)
    header = (
        f"{'backend':<11} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'CPU ms/req':>10}   round trips for 1 and 100 reports"
    )
    try:
        with running_server(root / "mariadb") as mariadb:
            urls = {
                "postgresql": None,
                "mysql": mariadb,
                "sqlite": f"sqlite+aiosqlite:///{root / 'sqlite' / 'catalogue.db'}",
            }
            _run(root, urls, arguments, header)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(
    root: Path, urls: dict[str, str | None], arguments: argparse.Namespace, header: str
) -> None:
    for backend in BACKENDS:
        print(f"seeding {arguments.reports} reports on {backend}", flush=True)
        (root / backend).mkdir(parents=True, exist_ok=True)
        _seed(root / backend, urls[backend], arguments.reports)
    print(f"\n{arguments.clients} connections, {arguments.seconds:.0f} s a run\n{header}")
    for number in range(arguments.rounds):
        # Every other round in the reverse order: a drift of the machine's speed during a
        # round favours no backend.
        order = BACKENDS if number % 2 == 0 else BACKENDS[::-1]
        for backend in order:
            result = _measure(
                root / backend, backend, urls[backend], arguments.clients, arguments.seconds
            )
            print(_row(result), flush=True)


if __name__ == "__main__":
    main()
