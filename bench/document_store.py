"""What the gateway's embedded MongoDB-protocol server serves on its own, with no gateway in
the way: the ceiling on any query that reads a document per report.

The nested+stores query reads its 100 reports' documents in one `find` by `_id`
(`datasources.documents.documents_by_report`). Here as many connections as the benchmark's
clients call that same batch function straight against the store, for as long as a run
lasts: finds per second, and the server's CPU per find. No gateway serves that query faster
than its store answers this.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import psutil
from pymongo import AsyncMongoClient

from bench.cpu import own_seconds
from core.settings import Settings
from datasources.documents import documents_by_report


@dataclass(frozen=True)
class Ceiling:
    finds_per_second: float
    cpu_ms_per_find: float


def ceiling(
    url: str, server: psutil.Process, report_ids: list[int], *, clients: int, seconds: float
) -> Ceiling:
    return asyncio.run(_drive(url, server, report_ids, clients=clients, seconds=seconds))


async def _drive(
    url: str, server: psutil.Process, report_ids: list[int], *, clients: int, seconds: float
) -> Ceiling:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    database = client[Settings.model_fields["mongo_database"].default]
    finds = 0

    async def one_connection(until: float) -> None:
        nonlocal finds
        while time.perf_counter() < until:
            found = await documents_by_report(database=database, report_ids=report_ids)
            if None in found:
                raise RuntimeError("a report of the nested+stores query has no document")
            finds += 1

    try:
        # A warm-up, unmeasured: every connection opened and the server's caches filled.
        await asyncio.gather(*(one_connection(time.perf_counter() + 1) for _ in range(clients)))
        finds = 0
        cpu, started = own_seconds(server), time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(one_connection(until) for _ in range(clients)))
        elapsed, cpu = time.perf_counter() - started, own_seconds(server) - cpu
    finally:
        await client.close()
    return Ceiling(finds / elapsed, 1000 * cpu / finds)
