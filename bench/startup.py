"""Start-up time of `gateway serve`: from launch until /readyz answers 200; and how soon a
worker of `serve --workers 2` that died is replaced.

Measures, with the CPU of the gateway and of the processes it started, an empty data
directory on a machine where no gateway has run yet (initdb, first start of every server,
migrations), then an empty one where one has (its cluster a copy of the one initdb made
then), then a warm one (servers restart on existing data), a few runs each, the three in
turn. Then, on a gateway started with two workers, kills a worker that has served for a
while, once per run, and measures its replacement: from the kill until the replacement's
application has started, and the replacement's CPU until then. Beside it, in the same run,
what a worker that is a new Python program pays before it can serve: importing the
application, in a process of its own, as the gateway's programs import it (the cycle
collector off, collector.py) and as a plain ``import`` does, the two in turn.

    python -m bench.startup [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.cpu import own_seconds, reaped_children_seconds
from bench.gateway_process import ServedGateway, serving
from gateway.embedded.postgres import pristine_cluster_path, server_account
from gateway.worker_process import WORKER_NAME
from gateway.workers import RESTART_INTERVAL

STARTED = "Application startup complete."
IMPORTS = {
    "as the gateway's programs import it": (
        "from gateway.collector import frozen_imports\n"
        "with frozen_imports():\n"
        "    import gateway.app"
    ),
    "with the collector running": "import gateway.app",
}


STARTS = (
    "an empty data directory, where no gateway has run",
    "an empty data directory",
    "a warm data directory",
)


def start(data_dir: Path) -> tuple[float, float]:
    """Seconds from launch until ready, and the CPU seconds of the gateway and of the
    processes it started, until it has stopped."""
    before = reaped_children_seconds()
    with serving(data_dir) as gateway:
        seconds = gateway.seconds_to_ready
    return seconds, reaped_children_seconds() - before


def starts(root: Path, runs: int) -> dict[str, tuple[list[float], list[float]]]:
    measured: dict[str, tuple[list[float], list[float]]] = {way: ([], []) for way in STARTS}
    for run in range(runs):
        # No cluster fresh from initdb to copy: as on a machine no gateway has run on.
        shutil.rmtree(pristine_cluster_path(server_account()), ignore_errors=True)
        data_dirs = [root / f"run-{run}-first", root / f"run-{run}", root / f"run-{run}"]
        for way, data_dir in zip(STARTS, data_dirs, strict=True):
            seconds, cpu = start(data_dir)
            measured[way][0].append(seconds)
            measured[way][1].append(cpu)
    return measured


def summary(label: str, values: list[float], unit: str = "s") -> str:
    return (
        f"{label:<38} median {statistics.median(values):7.3f} {unit}   "
        f"min {min(values):7.3f} {unit}   max {max(values):7.3f} {unit}   ({len(values)} runs)"
    )


def replacements(data_dir: Path, runs: int) -> tuple[list[float], list[float]]:
    """Seconds from killing a worker until its replacement's application started, and the
    replacement's CPU seconds by then, once per run."""
    seconds: list[float] = []
    cpu: list[float] = []
    log = data_dir / "bench-gateway.log"
    with serving(data_dir, workers="2", log_level="info") as gateway:
        starts = _wait_for_starts(log, 2)
        for _ in range(runs):
            # Older than the least time between two starts in one place, which would
            # otherwise be measured instead of the start itself.
            time.sleep(RESTART_INTERVAL)
            before = _workers(gateway)
            killed = time.perf_counter()
            before[0].kill()
            starts = _wait_for_starts(log, starts + 1)
            seconds.append(time.perf_counter() - killed)
            [replacement] = set(_workers(gateway)) - set(before)
            cpu.append(own_seconds(replacement))
    return seconds, cpu


def _workers(gateway: ServedGateway) -> list[psutil.Process]:
    """The gateway's workers, the oldest first."""
    workers = [
        process
        for process in psutil.Process(gateway.pid).children(recursive=True)
        if process.name() == WORKER_NAME
    ]
    return sorted(workers, key=lambda worker: worker.create_time())


def _wait_for_starts(log: Path, count: int) -> int:
    deadline = time.perf_counter() + 60
    while log.read_text().count(STARTED) < count:
        if time.perf_counter() > deadline:
            raise SystemExit(f"no {count} starts of workers in {log}")
        time.sleep(0.002)
    return count


def new_program_imports(runs: int) -> dict[str, tuple[list[float], list[float]]]:
    """Seconds and CPU seconds of a new Python process that imports the application, for
    each way of importing it, the ways taking turns."""
    measured: dict[str, tuple[list[float], list[float]]] = {way: ([], []) for way in IMPORTS}
    for _ in range(runs):
        for way, program in IMPORTS.items():
            seconds, cpu = measured[way]
            before = reaped_children_seconds()
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", program], check=True)
            seconds.append(time.perf_counter() - started)
            cpu.append(reaped_children_seconds() - before)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gateway-startup-"))
    try:
        started = starts(root, arguments.runs)
        replaced, replacement_cpu = replacements(root / "workers", arguments.runs)
        imports = new_program_imports(arguments.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for way, (seconds, cpu) in started.items():
        print(f"gateway serve on {way}")
        print(summary("launch to /readyz 200", seconds))
        print(summary("CPU, until it has stopped", cpu))
    print("gateway serve --workers 2, a worker killed")
    print(summary("until its replacement has started", replaced))
    print(summary("the replacement's CPU by then", replacement_cpu))
    for way, (seconds, cpu) in imports.items():
        print(f"a new Python program importing the application, {way}")
        print(summary("wall time", seconds))
        print(summary("CPU", cpu))


if __name__ == "__main__":
    main()
