"""DataLoaders against naive per-field lookups, on the nested query over 100 reports.

Seeds a catalogue (10,000 reports by default) on embedded servers, starts one gateway that
allows the naive variant, then drives the same query with concurrent clients, batched and
naive, in one run. Prints throughput, latency percentiles and round trips per store.

    python -m bench.nested [--reports 10000] [--clients 4] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.gateway_process import run_command, serving

QUERY = """
query Nested($first: Int!) {
  reports(first: $first) {
    totalCount
    edges { node {
      id title publicationDate status wordCount
      type { name }
      authors { isPrimary author { name institution { name location } } }
      primaryAuthor { name }
      technologies { name version }
      document { tags sections { heading } references { doi } metadata }
      stats { views downloads }
    } }
  }
}
"""


@dataclass
class Run:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    round_trips: dict[str, int] = field(default_factory=dict)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed


# The naive variant is allowed for this gateway only; snapshots would add noise.
SETTINGS = {
    "allow_naive_lookups": "true",
    "counter_snapshot_interval": "0",
    # Both variants execute: no answer comes from the response cache.
    "response_cache": "false",
}


async def _drive(
    client: httpx.AsyncClient, run: Run, headers: dict[str, str], clients: int, seconds: float
) -> None:
    deadline = time.perf_counter() + seconds

    async def one_client() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await client.post(
                "/graphql", json={"query": QUERY, "variables": {"first": 100}}, headers=headers
            )
            body = response.json()
            if response.status_code != 200 or body.get("errors"):
                run.errors += 1
                continue
            run.latencies.append(time.perf_counter() - started)
            run.round_trips = body["extensions"]["roundTrips"]

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    run.elapsed = time.perf_counter() - started


async def _measure(port: int, clients: int, seconds: float) -> list[Run]:
    runs = [Run("dataloaders"), Run("naive")]
    headers = {"dataloaders": {}, "naive": {"x-gateway-lookups": "naive"}}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits
    ) as client:
        for run in runs:
            await _drive(client, Run("warm-up"), headers[run.name], clients, 2)
            await _drive(client, run, headers[run.name], clients, seconds)
    return runs


def _report(runs: list[Run], reports: int, clients: int) -> None:
    print(f"nested query over 100 reports; {reports} reports seeded; {clients} concurrent clients")
    print(
        f"{'variant':<12} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} "
        f"{'p95 ms':>8} {'p99 ms':>8}   round trips (postgres / mongodb / redis)"
    )
    for run in runs:
        trips = run.round_trips
        print(
            f"{run.name:<12} {len(run.latencies):>8} {run.errors:>6} {run.throughput:>8.1f} "
            f"{run.percentile(0.50):>8.1f} {run.percentile(0.95):>8.1f} "
            f"{run.percentile(0.99):>8.1f}   "
            f"{trips.get('postgres', 0)} / {trips.get('mongodb', 0)} / {trips.get('redis', 0)}"
        )
    batched, naive = runs
    fewer = sum(naive.round_trips.values()) / sum(batched.round_trips.values())
    latency = statistics.median(naive.latencies) / statistics.median(batched.latencies)
    print(
        f"dataloaders: {fewer:.0f}x fewer round trips, "
        f"{batched.throughput / naive.throughput:.1f}x the throughput, "
        f"{latency:.1f}x lower median latency"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--data-dir", type=Path, help="reuse a seeded data directory")
    arguments = parser.parse_args()
    data_dir = arguments.data_dir or Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    try:
        if arguments.data_dir is None:
            run_command(
                data_dir, "seed", "--reports", str(arguments.reports), "--no-progress", **SETTINGS
            )
        with serving(data_dir, **SETTINGS) as gateway:
            runs = asyncio.run(_measure(gateway.port, arguments.clients, arguments.seconds))
        _report(runs, arguments.reports, arguments.clients)
    finally:
        if arguments.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
