"""What the limits cost a request, and how a gateway under attack queries keeps answering.

Two parts, in one run:

1. In process, on the nested benchmark query: preparing a document the first time
   (parse, shape, validation, cost) against a repeated one (a cache lookup and the
   per-request check of the variables), and against what parsing and validating on every
   request, as graphql-core does without a cache, would cost; and validation with the
   rules run side by side, as graphql-core runs them, against the rules run as one.
2. Against a served gateway on embedded stores: clients sending the attack query of the
   nested author lists as fast as they can, while one client sends ``{ __typename }``;
   the refusal's latency and ``{ __typename }``'s, with and without the attack.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import httpx
from graphql import parse, validate

from bench.gateway_process import run_command, serving
from bench.nested import QUERY as NESTED
from gateway.limits import Limits
from gateway.operations import RULES_AS_ONE, VALIDATION_RULES, OperationCache
from gateway.schema import catalogue_schema

ATTACK = (
    "{ reports(first:100) { edges { node { title authors { author { name reports(first:100) {"
    " edges { node { title authors { author { name reports(first:100) { edges { node { title"
    " } } } } } } } } } } } } } }"
)
VARIABLES = {"first": 100}


def _per_call(function: object, runs: int) -> float:
    """Microseconds per call of ``function``, the best of three rounds."""
    assert callable(function)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(runs):
            function()
        best = min(best, (time.perf_counter() - started) / runs)
    return best * 1e6


def in_process(runs: int) -> None:
    schema = catalogue_schema()
    graphql_schema = schema._schema

    def cold() -> None:
        OperationCache(graphql_schema, Limits()).prepare(NESTED).check(None, VARIABLES)

    warm_cache = OperationCache(graphql_schema, Limits())
    warm_cache.prepare(NESTED)

    def warm() -> None:
        warm_cache.prepare(NESTED).check(None, VARIABLES)

    def uncached() -> None:
        validate(graphql_schema, parse(NESTED), VALIDATION_RULES)

    document = parse(NESTED)

    def rules_side_by_side() -> None:
        validate(graphql_schema, document, VALIDATION_RULES)

    def rules_as_one() -> None:
        validate(graphql_schema, document, RULES_AS_ONE)

    print(f"limits on the nested benchmark query ({len(NESTED)} bytes), microseconds per request")
    print(f"  first time (parse, shape, validate, cost):   {_per_call(cold, runs // 10):9.1f}")
    print(f"  repeated (cache lookup, variables check):    {_per_call(warm, runs):9.1f}")
    print(f"  parse and validate per request, no cache:    {_per_call(uncached, runs // 10):9.1f}")
    side_by_side = _per_call(rules_side_by_side, runs // 10)
    as_one = _per_call(rules_as_one, runs // 10)
    print(f"  validate, the rules side by side (graphql-core): {side_by_side:6.1f}")
    print(
        f"  validate, the rules as one (gateway/validation): {as_one:6.1f}"
        f"  ({as_one / side_by_side:.2f} of side by side)"
    )


async def _latencies(
    client: httpx.AsyncClient,
    query: str,
    seconds: float,
    expected_code: str | None,
    *,
    vary: bool = False,
) -> list[float]:
    """Latencies of ``query`` sent back to back; with ``vary``, each time as a new text
    (a comment differs), so that the gateway cannot answer from its cache of documents."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        text = f"{query} # {started}" if vary else query
        response = await client.post("/graphql", json={"query": text})
        body = response.json()
        code = body["errors"][0]["extensions"]["code"] if "errors" in body else None
        if code != expected_code:
            raise SystemExit(f"unexpected answer to {query[:40]}: {body}")
        latencies.append(time.perf_counter() - started)
    return latencies


def _summary(name: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    return f"  {name:<40} {len(ordered):>7} {at(0.5):>8.2f} {at(0.99):>8.2f} {at(1.0):>8.2f}"


async def under_attack(port: int, attackers: int, seconds: float) -> None:
    limits = httpx.Limits(max_connections=attackers + 1)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
    ) as client:
        await _latencies(client, "{ __typename }", 1, None)
        quiet = await _latencies(client, "{ __typename }", seconds, None)
        attacks = {}
        for vary in (False, True):
            probe, *refusals = await asyncio.gather(
                _latencies(client, "{ __typename }", seconds, None),
                *(
                    _latencies(client, ATTACK, seconds, "QUERY_TOO_COMPLEX", vary=vary)
                    for _ in range(attackers)
                ),
            )
            attacks[vary] = (probe, [value for run in refusals for value in run])
    print(f"served gateway, {attackers} clients sending the attack query, {seconds:g}s each")
    print(f"  {'':<40} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    print(_summary("{ __typename }, nothing else running", quiet))
    for vary, label in ((False, "the same text"), (True, "a new text each time")):
        probe, refused = attacks[vary]
        print(_summary(f"attack as {label}: refused", refused))
        print(_summary("  { __typename } meanwhile", probe))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--attackers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reports", type=int, default=200)
    arguments = parser.parse_args()
    in_process(arguments.runs)
    data_dir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    # The probe executes each time: no answer comes from the response cache.
    settings = {"counter_snapshot_interval": "0", "response_cache": "false"}
    try:
        run_command(data_dir, "seed", "--reports", str(arguments.reports), "--no-progress")
        with serving(data_dir, **settings) as gateway:
            asyncio.run(under_attack(gateway.port, arguments.attackers, arguments.seconds))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
