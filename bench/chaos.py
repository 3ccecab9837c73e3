"""The gateway through store outages: a steady rate of mixed queries and mutations while
each store in turn is stopped (SIGTERM, SIGKILL, or SIGSTOP for a hang) for a while and
brought back.

The stores run on servers this script starts and owns (so that the gateway, which would
start a dead embedded server again at once, does not), seeded with a small catalogue; the
gateway runs as `gateway serve`, its response cache off so that every request reaches the
stores. Requests, in turn:

- ``relational``: reports with their authors (PostgreSQL only);
- ``documents``: reports with their documents (PostgreSQL and MongoDB);
- ``counters``: a report with its live counters (PostgreSQL and Redis);
- ``create``: ``createReport`` as an editor (PostgreSQL and MongoDB);
- ``view``: ``recordView`` (PostgreSQL and Redis).

Prints, for every second: requests answered in full, in part (and the codes and fields of
their errors), failed (HTTP 5xx or no answer), and p99 latency. Then, for each outage: how
often the requests that need no stopped store answered in full, and their p99 against the
baseline's; how long after the store was back its requests answered in full again. At
the end: acknowledged writes lost, read back from the stores (reports created, and views
counted).

    python -m bench.chaos [--rate 20] [--down 10] [--stores postgres mongodb redis]
                          [--signals TERM KILL STOP] [--reports 200]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import psutil
from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.gateway_process import run_command, serving
from core.store_urls import StoreUrls
from datasources.counters import stats_key
from datasources.document_migrations import REPORT_DOCUMENTS
from gateway.embedded import EmbeddedStores
from gateway.embedded.process import EmbeddedServer
from resolvers.nodes import to_global_id

JWT_SECRET = "chaos-bench-secret-of-enough-length-for-hs256"  # noqa: S105 - a throwaway
SETTINGS = {
    "response_cache": "false",
    "counter_snapshot_interval": "5",
    "jwt_secret": JWT_SECRET,
    "environment": "development",
}
NEEDS = {
    "relational": {"postgres"},
    "documents": {"postgres", "mongodb"},
    "counters": {"postgres", "redis"},
    "create": {"postgres", "mongodb"},
    "view": {"postgres", "redis"},
}
KINDS = list(NEEDS)
RELATIONAL = "{ reports(first: 5) { edges { node { title authors { author { name } } } } } }"
DOCUMENTS = "{ reports(first: 5) { edges { node { title document { tags } } } } }"
COUNTERS = "query($id: ID!) { report(id: $id) { title stats { views } } }"
CREATE = """mutation($input: CreateReportInput!) { createReport(input: $input) {
  __typename ... on ReportSaved { report { databaseId } } } }"""
VIEW = """mutation($id: ID!) { recordView(reportId: $id) {
  __typename ... on Counted { stats { views } } } }"""
BASELINE = "baseline"


@dataclass
class Outcome:
    kind: str
    # Seconds from the start of the load to when it was sent.
    sent: float
    phase: str
    latency: float
    # "ok", "partial" or "failed"
    result: str
    codes: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)


@dataclass
class Phase:
    name: str
    store: str | None
    started: float
    back_at: float | None = None


@dataclass
class Acknowledged:
    reports: list[int] = field(default_factory=list)
    views: Counter[int] = field(default_factory=Counter)


class Load:
    """Requests at a steady rate, each in its own task, whatever the others do."""

    def __init__(self, port: int, rate: float, reports: int) -> None:
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.rate = rate
        self.reports = reports
        self.outcomes: list[Outcome] = []
        self.acknowledged = Acknowledged()
        self.phase = Phase(BASELINE, None, time.monotonic())
        self.started = time.monotonic()
        token = jwt.encode(
            {"sub": "chaos", "role": "editor", "exp": int(time.time()) + 3600},
            JWT_SECRET,
            algorithm="HS256",
        )
        self.editor = {"authorization": f"Bearer {token}"}
        self._sent = 0

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
            tasks: set[asyncio.Task[None]] = set()
            next_at = time.monotonic()
            while not stop.is_set():
                kind = KINDS[self._sent % len(KINDS)]
                task = asyncio.create_task(self._one(client, kind, self._sent))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                self._sent += 1
                next_at += 1 / self.rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient, kind: str, sequence: int) -> None:
        report = sequence % self.reports + 1
        body, headers = self._request(kind, report, sequence)
        phase = self.phase.name
        started = time.monotonic()
        try:
            response = await client.post(self.url, json=body, headers=headers)
        except httpx.TransportError as error:
            self._record(kind, phase, started, "failed", [type(error).__name__], [kind])
            return
        if response.status_code >= 500:
            self._record(kind, phase, started, "failed", [f"HTTP {response.status_code}"], [kind])
            return
        answer = response.json()
        errors = answer.get("errors") or []
        codes = [error.get("extensions", {}).get("code", "?") for error in errors]
        fields = [str((error.get("path") or ["(request)"])[-1]) for error in errors]
        self._record(kind, phase, started, "partial" if errors else "ok", codes, fields)
        if not errors:
            self._acknowledge(kind, report, answer["data"])

    def _request(self, kind: str, report: int, sequence: int) -> tuple[dict[str, Any], Any]:
        report_id = to_global_id("Report", report)
        if kind == "relational":
            return {"query": RELATIONAL}, None
        if kind == "documents":
            return {"query": DOCUMENTS}, None
        if kind == "counters":
            return {"query": COUNTERS, "variables": {"id": report_id}}, None
        if kind == "view":
            return {"query": VIEW, "variables": {"id": report_id}}, None
        created = {
            "title": f"Written through an outage {sequence}",
            "typeId": to_global_id("ReportType", 1),
            "authors": [{"authorId": to_global_id("Author", 1), "isPrimary": True}],
            "abstract": "Kept, or never acknowledged.",
            "publicationDate": "2025-01-01",
            "wordCount": 1000,
            "technologyIds": [],
            "document": {"tags": ["chaos"]},
        }
        return {"query": CREATE, "variables": {"input": created}}, self.editor

    def _record(  # noqa: PLR0917 - one outcome's parts
        self, kind: str, phase: str, started: float, result: str, codes: list[str],
        fields: list[str],
    ) -> None:  # fmt: skip
        latency = time.monotonic() - started
        sent = started - self.started
        self.outcomes.append(Outcome(kind, sent, phase, latency, result, codes, fields))

    def _acknowledge(self, kind: str, report: int, data: dict[str, Any]) -> None:
        if kind == "create" and data["createReport"]["__typename"] == "ReportSaved":
            self.acknowledged.reports.append(data["createReport"]["report"]["databaseId"])
        elif kind == "view" and data["recordView"]["__typename"] == "Counted":
            self.acknowledged.views[report] += 1


@contextmanager
def owned_stores(directory: Path) -> Iterator[tuple[StoreUrls, dict[str, EmbeddedServer]]]:
    with EmbeddedStores(directory, StoreUrls()) as stores:
        urls = stores.start()
        yield urls, {server.name: server for server in stores.servers}


def fault(server: EmbeddedServer, how: str) -> None:
    assert server.process is not None
    if how == "STOP":
        # The whole server hangs: PostgreSQL serves each connection from a process of its
        # own, which stopping the postmaster alone leaves running.
        for process in _server_processes(server):
            process.send_signal(signal.SIGSTOP)
        return
    server.process.send_signal(signal.Signals[f"SIG{how}"])


def _server_processes(server: EmbeddedServer) -> list[psutil.Process]:
    assert server.process is not None
    parent = psutil.Process(server.process.pid)
    return [parent, *parent.children(recursive=True)]


def restore(server: EmbeddedServer, how: str) -> str:
    """Bring the server back on its port; what it took."""
    assert server.process is not None
    if how == "STOP":
        for process in _server_processes(server):
            process.send_signal(signal.SIGCONT)
        return "continued"
    try:
        server.process.wait(timeout=1)
        note = "restarted"
    except Exception:
        server.process.kill()
        server.process.wait()
        note = "did not stop on SIGTERM (clients still connected): killed, restarted"
    server.restart()
    return note


async def views_now(urls: StoreUrls, reports: int) -> dict[int, int]:
    assert urls.redis_url is not None
    redis = Redis.from_url(urls.redis_url)
    try:
        pipeline = redis.pipeline(transaction=False)
        for report in range(1, reports + 1):
            pipeline.hget(stats_key(report), "views")
        counted = await pipeline.execute()
    finally:
        await redis.aclose()
    return {report: int(views or 0) for report, views in enumerate(counted, start=1)}


async def lost_writes(
    urls: StoreUrls, acknowledged: Acknowledged, views_before: dict[int, int], reports: int
) -> tuple[int, int, int]:
    """Reports acknowledged but missing from PostgreSQL or MongoDB, and views counted but
    missing from Redis, read from the stores themselves."""
    assert urls.database_url is not None
    assert urls.mongo_url is not None
    ids = acknowledged.reports
    engine = create_async_engine(urls.database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT id FROM reports WHERE id = ANY(:ids)"), {"ids": ids}
            )
            found = {row[0] for row in rows}
    finally:
        await engine.dispose()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(urls.mongo_url)
    try:
        documents = {
            document["_id"]
            async for document in mongo["gateway"][REPORT_DOCUMENTS].find({"_id": {"$in": ids}})
        }
    finally:
        await mongo.close()
    after = await views_now(urls, reports)
    views_lost = sum(
        max(0, views_before[report] + counted - after[report])
        for report, counted in acknowledged.views.items()
    )
    return len(set(ids) - found), len(set(ids) - documents), views_lost


def per_second(outcomes: list[Outcome]) -> None:
    print(f"\n{'s':>4} {'phase':<22} {'ok':>4} {'part':>5} {'fail':>5} {'p99 ms':>8}  errors")
    by_second: dict[int, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_second[int(outcome.sent)].append(outcome)
    for second in sorted(by_second):
        group = by_second[second]
        counts = Counter(outcome.result for outcome in group)
        errors = Counter(
            f"{code}@{name}"
            for outcome in group
            for code, name in zip(outcome.codes, outcome.fields, strict=True)
        )
        shown = ", ".join(f"{error} x{count}" for error, count in errors.most_common(3))
        print(f"{second:>4} {group[0].phase:<22} {counts['ok']:>4} {counts['partial']:>5} "
              f"{counts['failed']:>5} {_p99(group):>8.1f}  {shown}")  # fmt: skip


def _p99(outcomes: list[Outcome]) -> float:
    latencies = sorted(outcome.latency for outcome in outcomes)
    if not latencies:
        return 0.0
    return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000


def summary(outcomes: list[Outcome], phases: list[Phase]) -> None:
    baseline = [outcome for outcome in outcomes if outcome.phase == BASELINE]
    baseline_p99 = _p99(baseline)
    failures = [outcome for outcome in outcomes if outcome.result == "failed"]
    five_hundreds = [o for o in failures if any(c.startswith("HTTP 5") for c in o.codes)]
    print(f"\nbaseline: {len(baseline)} requests, p99 {baseline_p99:.1f} ms")
    print(f"5xx answers: {len(five_hundreds)}; no answer at all: "
          f"{len(failures) - len(five_hundreds)}  (target: no 5xx)")  # fmt: skip
    print(f"\n{'outage':<22} {'unaffected full':>16} {'p99 ms':>8} {'x base':>7} "
          f"{'affected full':>14} {'back in s':>10}")  # fmt: skip
    for phase in phases:
        if phase.store is None:
            continue
        during = [o for o in outcomes if o.phase == phase.name]
        unaffected = [o for o in during if phase.store not in NEEDS[o.kind]]
        affected = [o for o in during if phase.store in NEEDS[o.kind]]
        full = sum(o.result == "ok" for o in unaffected)
        affected_full = sum(o.result == "ok" for o in affected)
        p99 = _p99(unaffected)
        ratio = p99 / baseline_p99 if baseline_p99 and unaffected else 0.0
        print(
            f"{phase.name:<22} {f'{full}/{len(unaffected)}':>16} {p99:>8.1f} {ratio:>7.2f} "
            f"{f'{affected_full}/{len(affected)}':>14} {_recovered_after(phase, during):>10}"
        )
    print(
        "targets: no 5xx; unaffected requests answer in full, p99 under 2x the baseline's;"
        " the store's requests in full within 5 s of its return"
    )


def _recovered_after(phase: Phase, during: list[Outcome]) -> str:
    """Seconds from the store's return to the last request needing it that was sent after
    its return and not answered in full."""
    if phase.back_at is None:
        return "-"
    back_at = phase.back_at
    late = [
        o.sent for o in during
        if phase.store in NEEDS[o.kind] and o.sent >= back_at and o.result != "ok"
    ]  # fmt: skip
    return f"{max(late, default=back_at) - back_at:.1f}"


async def chaos(arguments: argparse.Namespace, port: int, urls: StoreUrls,
                servers: dict[str, EmbeddedServer]) -> None:  # fmt: skip
    load = Load(port, arguments.rate, arguments.reports)
    views_before = await views_now(urls, arguments.reports)
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop))
    phases = [load.phase]
    await asyncio.sleep(arguments.baseline)
    for store in arguments.stores:
        server = servers[store]
        for how in arguments.signals:
            phase = load.phase = Phase(f"{store} {how}", store, time.monotonic())
            phases.append(phase)
            await asyncio.to_thread(fault, server, how)
            await asyncio.sleep(arguments.down)
            note = await asyncio.to_thread(restore, server, how)
            phase.back_at = time.monotonic() - load.started
            print(f"{phase.name}: back after {arguments.down:g}s ({note})", flush=True)
            await asyncio.sleep(arguments.recovery)
    stop.set()
    await running
    per_second(load.outcomes)
    summary(load.outcomes, phases)
    missing_rows, missing_documents, views_lost = await lost_writes(
        urls, load.acknowledged, views_before, arguments.reports
    )
    print(f"\nacknowledged writes: {len(load.acknowledged.reports)} reports created, "
          f"{sum(load.acknowledged.views.values())} views counted")  # fmt: skip
    print(
        f"lost: {missing_rows} reports missing from PostgreSQL, {missing_documents} "
        f"documents missing from MongoDB, {views_lost} views missing from Redis (target 0)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--down", type=float, default=10.0, help="seconds each outage lasts")
    parser.add_argument("--baseline", type=float, default=10.0)
    parser.add_argument("--recovery", type=float, default=10.0, help="seconds after each")
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--stores", nargs="+", default=["postgres", "mongodb", "redis"])
    parser.add_argument("--signals", nargs="+", default=["TERM", "KILL", "STOP"])
    arguments = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="gateway-bench-chaos-"))
    try:
        with owned_stores(data_dir / "stores") as (urls, servers):
            assert urls.database_url is not None
            assert urls.mongo_url is not None
            assert urls.redis_url is not None
            store_settings = {
                "database_url": urls.database_url,
                "mongo_url": urls.mongo_url,
                "redis_url": urls.redis_url,
            }
            run_command(data_dir, "seed", "--reports", str(arguments.reports), "--no-progress",
                        **store_settings)  # fmt: skip
            with serving(data_dir, **SETTINGS, **store_settings) as gateway:
                print(f"gateway pid {gateway.pid}; {arguments.rate:g} requests/s; outages of "
                      f"{arguments.down:g}s: {', '.join(arguments.stores)} x "
                      f"{', '.join(arguments.signals)}", flush=True)  # fmt: skip
                asyncio.run(chaos(arguments, gateway.port, urls, servers))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
