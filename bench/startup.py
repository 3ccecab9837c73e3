"""Start-up time of `gateway serve`: from launch until /readyz answers 200.

Measures an empty data directory (initdb, first start of every server, migrations) and a
warm one (servers restart on existing data), a few runs each, and prints the figures.

    python -m bench.startup [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from gateway.embedded.process import free_port

READY_TIMEOUT = 120.0


def time_to_ready(data_dir: Path) -> float:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environment |= {"GATEWAY_DATA_DIR": str(data_dir), "GATEWAY_LOG_LEVEL": "warning"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
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
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


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
