"""wrk sending one GraphQL POST over keep-alive connections, with its latency histogram."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# wrk reports its own summary only as text; the done hook writes what we need as one
# line that cannot be mistaken for anything else wrk prints.
MARKER = "WRK_RESULT"
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("{marker} %.0f %.0f %.0f %.0f %.0f\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.connect + errors.read + errors.write + errors.status + errors.timeout))
end
"""


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


def load_options(
    description: str | None,
    *,
    reports: int,
    seconds: float,
    rounds: int,
    passes_over: str,
) -> argparse.ArgumentParser:
    """The options of a benchmark that drives servers with wrk: the catalogue's size, the
    seconds and connections of a run, and the passes over what it compares."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reports", type=int, default=reports)
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=rounds, help=f"passes over {passes_over}")
    return parser


def wrk_path() -> Path:
    return Path(shutil.which("wrk") or "/usr/bin/wrk")


def run(url: str, body: Mapping[str, object], *, clients: int, seconds: float) -> Load:
    """``clients`` connections sending ``body`` for ``seconds``; latencies from wrk's own
    histogram."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA.format(body=json.dumps(body), marker=MARKER))
    try:
        finished = subprocess.run(
            [
                str(wrk_path()),
                "--threads",
                "1",
                "--connections",
                str(clients),
                "--duration",
                f"{seconds:.0f}s",
                # Slow servers under load take many seconds a request: a timeout would
                # count them as errors instead of measuring them.
                "--timeout",
                "120s",
                "--script",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        Path(script.name).unlink()
    for line in finished.stdout.splitlines():
        if line.startswith(MARKER):
            requests, duration, p50, p99, errors = (float(v) for v in line.split()[1:])
            return Load(int(requests), duration / 1e6, p50 / 1e3, p99 / 1e3, int(errors))
    raise RuntimeError(f"wrk printed no result:\n{finished.stdout}\n{finished.stderr}")
