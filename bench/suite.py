"""The test suite's time and CPU: the whole run as the README runs it, then, with
``--files``, each test file in a run of its own, the costliest first.

On two cores the suite is bound by CPU, so its CPU says what a change to it saved where its
wall time, which moves with whatever else the machine runs, may not. A run's CPU is that of
its pytest processes and of the processes they started and waited for (gateway processes,
worker templates, embedded servers, the browser). It leaves out the servers of a gateway
that a test killed on purpose, which the system reaps: adopted here instead, they stayed
until this process reaped them, and the tests that wait for them to be gone failed. A
file run alone also pays a pytest start and, if its tests reach the stores, the embedded
servers; the files' sum beside the whole run's shows what the parallel run shares.

    python -m bench.suite [--files] [--no-cov] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url

from bench.cpu import reaped_children_seconds
from bench.installs import apt_packages
from bench.system_mariadb import running_server
from bench.system_postgres import running_cluster
from core.store_urls import StoreUrls
from gateway.embedded import EmbeddedStores

TESTS = Path(__file__).resolve().parent.parent / "tests"
PARALLEL = ["-n", "3", "--dist", "loadgroup"]
COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected)")


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    outcome: str
    failures: list[str]


def run_pytest(arguments: list[str], environment: dict[str, str]) -> Run:
    cpu = reaped_children_seconds()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    summary = done.stdout.strip().splitlines()[-1:] or [""]
    counts = ", ".join(f"{count} {word}" for count, word in COUNTS.findall(summary[0]))
    failures = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return Run(
        wall, reaped_children_seconds() - cpu, counts or f"exit code {done.returncode}", failures
    )


def print_failures(run: Run) -> None:
    for failure in run.failures:
        print(f"    {failure}")


@contextmanager
def embedded_postgres(directory: Path) -> Iterator[str]:
    with EmbeddedStores(directory, StoreUrls()) as embedded:
        url = embedded.start().database_url
        assert url is not None
        yield url


@contextmanager
def system_postgres(directory: Path) -> Iterator[str]:
    apt_packages("postgresql-15")
    # As continuous integration runs it: a server thrown away after the run need not
    # survive a crash.
    durability_off = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
    with running_cluster(directory, "-c max_connections=600", *durability_off) as cluster:
        yield cluster.url()


@contextmanager
def system_mariadb(directory: Path) -> Iterator[str]:
    with running_server(directory) as url:
        # The tests make their databases on the server: the URL names none.
        yield make_url(url).set(database="").render_as_string(hide_password=False)


@contextmanager
def sqlite_files(directory: Path) -> Iterator[str]:
    yield f"sqlite+aiosqlite:///{directory}"


BACKENDS: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "PostgreSQL 18 (embedded)": embedded_postgres,
    "PostgreSQL 15": system_postgres,
    "MariaDB": system_mariadb,
    "SQLite": sqlite_files,
}


def each_backend() -> None:
    print(f"\n{'the suite given, -n 3':<28} {'wall s':>8} {'CPU s':>8}  outcome")
    for name, backend in BACKENDS.items():
        with tempfile.TemporaryDirectory() as directory, backend(Path(directory)) as url:
            run = run_pytest(PARALLEL, dict(os.environ, GATEWAY_TEST_DATABASE_URL=url))
        print(f"{name:<28} {run.wall:>8.1f} {run.cpu:>8.1f}  {run.outcome}")
        print_failures(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", action="store_true", help="also run each file alone")
    parser.add_argument(
        "--backends", action="store_true", help="also run the suite given each relational backend"
    )
    parser.add_argument("--no-cov", action="store_true", help="without coverage")
    parser.add_argument("--database-url", help="GATEWAY_TEST_DATABASE_URL for the runs")
    arguments = parser.parse_args()
    environment = dict(os.environ)
    if arguments.database_url:
        environment["GATEWAY_TEST_DATABASE_URL"] = arguments.database_url
    coverage = [] if arguments.no_cov else ["--cov"]

    whole = run_pytest([*coverage, *PARALLEL], environment)
    command = " ".join(["pytest", *coverage, *PARALLEL])
    print(f"{command}: {whole.outcome}")
    print_failures(whole)
    print(
        f"  wall {whole.wall:.1f} s, CPU {whole.cpu:.1f} s "
        f"({whole.cpu / whole.wall:.2f} of {os.cpu_count()} cores busy)"
    )
    if arguments.backends:
        each_backend()
    if not arguments.files:
        return

    # A file alone covers too little of the code for the suite's threshold.
    alone = [*coverage, "--cov-fail-under=0"] if coverage else []
    runs = {
        path.name: run_pytest([*alone, str(path)], environment)
        for path in sorted(TESTS.glob("test_*.py"))
    }
    files_cpu = sum(run.cpu for run in runs.values())
    print(f"\n{'file':<28} {'wall s':>8} {'CPU s':>8} {'share':>6}  outcome")
    for name, run in sorted(runs.items(), key=lambda item: -item[1].cpu):
        share = run.cpu / files_cpu
        print(f"{name:<28} {run.wall:>8.1f} {run.cpu:>8.1f} {share:>6.1%}  {run.outcome}")
        print_failures(run)
    files_wall = sum(run.wall for run in runs.values())
    print(f"{'files, one at a time':<28} {files_wall:>8.1f} {files_cpu:>8.1f}")


if __name__ == "__main__":
    main()
