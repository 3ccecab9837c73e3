"""Seed time: `gateway seed --reports N` on a fresh data directory, then again (idempotent
rewrite of the same rows), for each N given.

    python -m bench.seed [--reports 10000 100000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.gateway_process import run_command


def seed_seconds(data_dir: Path, reports: int) -> float:
    started = time.perf_counter()
    run_command(data_dir, "seed", "--reports", str(reports), "--no-progress")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, nargs="+", default=[10_000, 100_000])
    arguments = parser.parse_args()
    print(f"{'reports':>8}  {'first seed':>12}  {'reports/s':>10}  {'second seed':>12}")
    for reports in arguments.reports:
        data_dir = Path(tempfile.mkdtemp(prefix="gateway-seed-"))
        try:
            first = seed_seconds(data_dir, reports)
            second = seed_seconds(data_dir, reports)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        print(f"{reports:>8}  {first:>10.1f} s  {reports / first:>10.0f}  {second:>10.1f} s")


if __name__ == "__main__":
    main()
