"""Which MySQL driver serves the gateway best: asyncmy against aiomysql, side by side in
one run, on the statements the gateway itself sends for the nested query.

A MariaDB server (the distribution's, installed with apt-get when missing, as root) is
started for the run and seeded by `gateway seed`; `gateway explain` then runs the nested
query over F reports on it, and its explanation gives the relational statements, with
their values, exactly as the gateway sent them. Each driver replays them in this process:
C tasks, each on a connection of its own, send the statements one after another (a
"request") for S seconds. Prints, for each driver and round: the rows of a request (the
same for both), requests per second, and this process's CPU per request (the driver's
protocol and parsing, and its share of the event loop: the harness is the same for
both). Rounds alternate the drivers' order. aiomysql is installed from PyPI when missing.

    python -m bench.mysql_drivers [--reports 2000] [--first 100] [--seconds 8]
                                  [--clients 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import make_url

from bench.gateway_process import environment, run_command
from bench.peers import GATEWAY_NESTED, GATEWAY_SETTINGS
from bench.system_mariadb import running_server

DRIVERS = ("asyncmy", "aiomysql")
# The relational store's name in an explanation, whichever the backend.
RELATIONAL = "postgres"

Statement = tuple[str, Sequence[Any]]


@dataclass(frozen=True)
class Round:
    driver: str
    rows: int
    requests: int
    seconds: float
    cpu_seconds: float

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_seconds / max(self.requests, 1)


def _installed(module: str) -> ModuleType:
    if importlib.util.find_spec(module) is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", module], check=True)
    return importlib.import_module(module)


def _statements(data_dir: Path, url: str, first: int) -> list[Statement]:
    """The relational statements the gateway sends for the nested query over ``first``
    reports, with their values, from `gateway explain`."""
    document = data_dir / "nested.graphql"
    document.write_text(GATEWAY_NESTED)
    explained = subprocess.run(
        [
            *(sys.executable, "-m", "gateway", "explain", str(document)),
            *("--variables", json.dumps({"first": first})),
        ],
        env=environment(data_dir, **GATEWAY_SETTINGS, database_url=url),
        check=True,
        capture_output=True,
        text=True,
    )
    steps = json.loads(explained.stdout)["extensions"]["explain"]["steps"]
    return [
        (sent["sql"], sent["parameters"])
        for step in steps
        if step["store"] == RELATIONAL
        for sent in step["sent"]
    ]


async def _round(
    driver: str,
    module: ModuleType,
    url: str,
    statements: list[Statement],
    *,
    clients: int,
    seconds: float,
) -> Round:
    server = make_url(url)
    connections = [
        await module.connect(
            host=server.host,
            port=server.port,
            user=server.username,
            password=server.password or "",
            db=server.database,
            autocommit=True,
        )
        for _ in range(clients)
    ]
    done = 0
    ends = time.perf_counter() + seconds

    async def request(connection: Any) -> int:
        rows = 0
        for sql, values in statements:
            async with connection.cursor() as cursor:
                await cursor.execute(sql, values)
                rows += len(await cursor.fetchall())
        return rows

    async def client(connection: Any) -> None:
        nonlocal done
        while time.perf_counter() < ends:
            await request(connection)
            done += 1

    # Both drivers read the same rows, or the comparison is of different work.
    rows = await request(connections[0])
    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(connection) for connection in connections))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    for connection in connections:
        connection.close()
    return Round(driver, rows, done, elapsed, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--first", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    modules = {driver: _installed(driver) for driver in DRIVERS}
    root = Path(tempfile.mkdtemp(prefix="bench-mysql-drivers-"))
    root.chmod(0o755)
    with running_server(root / "mariadb") as url:
        data_dir = root / "data"
        print(f"seeding {arguments.reports} reports", flush=True)
        run_command(
            data_dir, "seed", "--reports", str(arguments.reports), "--no-progress",
            **GATEWAY_SETTINGS, database_url=url,
        )  # fmt: skip
        statements = _statements(data_dir, url, arguments.first)
        print(
            f"{len(statements)} statements for the nested query over {arguments.first} reports;"
            f" {arguments.clients} connections, {arguments.seconds:g} s a round"
        )
        print(
            f"{'round':>5} {'driver':10} {'rows/request':>12} {'requests/s':>10}"
            f" {'CPU ms/request':>15}"
        )
        rounds: list[Round] = []
        for number in range(arguments.rounds):
            order = DRIVERS if number % 2 == 0 else DRIVERS[::-1]
            for driver in order:
                measured = asyncio.run(
                    _round(
                        driver, modules[driver], url, statements,
                        clients=arguments.clients, seconds=arguments.seconds,
                    )
                )  # fmt: skip
                rounds.append(measured)
                print(
                    f"{number + 1:>5} {driver:10} {measured.rows:>12} {measured.throughput:>10.1f}"
                    f" {measured.cpu_ms:>15.3f}",
                    flush=True,
                )
        print()
        for driver in DRIVERS:
            own = [measured for measured in rounds if measured.driver == driver]
            print(
                f"{driver:10} median {statistics.median(r.throughput for r in own):.1f}"
                f" requests/s, {statistics.median(r.cpu_ms for r in own):.3f} ms CPU/request"
            )


if __name__ == "__main__":
    main()
