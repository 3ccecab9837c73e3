"""Start-up time of `gateway serve`: from launch until /readyz answers 200.

Measures an empty data directory (initdb, first start of every server, migrations) and a
warm one (servers restart on existing data), a few runs each, and prints the figures.

    python -m bench.startup [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.gateway_process import serving


def time_to_ready(data_dir: Path) -> float:
    with serving(data_dir) as gateway:
        return gateway.seconds_to_ready


def summary(label: str, seconds: list[float]) -> str:
    return (
        f"{label:<22} median {statistics.median(seconds):6.2f} s   "
        f"min {min(seconds):6.2f} s   max {max(seconds):6.2f} s   ({len(seconds)} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    empty, warm = [], []
    root = Path(tempfile.mkdtemp(prefix="gateway-startup-"))
    try:
        for run in range(arguments.runs):
            data_dir = root / f"run-{run}"
            empty.append(time_to_ready(data_dir))
            warm.append(time_to_ready(data_dir))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("gateway serve, launch to /readyz 200")
    print(summary("empty data directory", empty))
    print(summary("warm data directory", warm))


if __name__ == "__main__":
    main()
