"""Live counters pushed over WebSocket to thousands of subscribers of one gateway process,
while a second process counts views at a steady rate.

Seeds a catalogue on embedded servers and serves it with two gateways on the same stores,
one process each. A, the one measured, holds the subscribers; B takes the increments
(``recordView`` over HTTP, --rate a second for --seconds after two seconds of warm-up,
round robin over the watched reports), which reach A through Redis pub/sub. The
subscribers are graphql-transport-ws connections to A, one subscription each, opened from
--client-processes processes (websockets' asyncio client on uvloop, offering
permessage-deflate as browsers do unless --no-deflate): ``reportStats`` spread evenly over
the --watched reports with the most views, and --board of them on ``topReports(limit:
10)``, whose top ten are among those reports.

Latency is taken over every (subscriber, increment) pair: from the moment the increment
was sent to B to the arrival of the first event that carries its value or a later one.
A value skipped by coalescing counts as delivered by the event that overtook it, so a
subscriber that falls behind shows in the figures, where latencies per event would show
only the events that did reach it. A board subscriber's pairs are the increments of the
reports that stayed on its board throughout. ``time.monotonic`` is the machine's one
clock, the same in every process.

Once the increments are answered and --settle seconds have passed, every subscriber's
last value is compared with the counters read back: one that differs is a lost final
value. Prints the figures; the CPU of A, B, the stores, the clients, the sender and the
rest of the machine over the increments (other work on a shared machine stalls what is
measured: its busiest half second is printed too); A's memory; and the issue's targets,
met or not.

    python -m bench.subscriptions [--subscribers 5000] [--board 100] [--watched 100]
                                  [--rate 200] [--seconds 30] [--reports 200]
                                  [--client-processes 2] [--no-deflate] [--settle 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import re
import resource
import shutil
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import psutil
import uvloop
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from bench.cpu import own_seconds, tree_seconds
from bench.gateway_process import run_command, serving
from gateway.embedded.process import recorded_process
from gateway.embedded.stores import ENDPOINTS_FILE, SERVERS
from resolvers.reports import MAX_TOP_REPORTS

TRANSPORT = Subprotocol("graphql-transport-ws")
BOARD_LIMIT = 10
STATS = "subscription($id: ID!) { reportStats(reportId: $id) { views downloads } }"
BOARD = f"subscription {{ topReports(limit: {BOARD_LIMIT}) {{ databaseId stats {{ views }} }} }}"
VIEW = "mutation($id: ID!) { recordView(reportId: $id) { ... on Counted { stats { views } } } }"
MOST_VIEWED = "query($limit: Int!) { topReports(limit: $limit) { id databaseId } }"
FINAL = """
query($ids: [ID!]!, $limit: Int!) {
  nodes(ids: $ids) { ... on Report { databaseId stats { views } } }
  topReports(limit: $limit) { databaseId stats { views } }
}
"""
# Counters change under the response cache's volatile TTL: the final ones are read past it.
UNCACHED = {"cache-control": "no-cache"}
# Snapshots of the counters to PostgreSQL would add work on their own schedule.
SETTINGS = {"counter_snapshot_interval": "0"}
# Handshakes a client process has in flight at once: all 5,000 at once would overflow
# the gateway's listen backlog and time out, which measures the opening, not the feeds.
OPENING_AT_ONCE = 64
OPEN_TIMEOUT = 120.0
# Increments before the measured ones, at the same rate: B's pools filled and its first
# operations prepared, A's feeds past their first events.
WARM_UP_SECONDS = 2.0
# Keep-alive connections the increments share: enough that a pause of B's (a collection,
# a slow store call) does not hold back the increments due meanwhile.
SENDING_CONNECTIONS = 64
CONTENT_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)")
T = TypeVar("T")
# Seconds between two looks at how late a client process's event loop runs, or at how
# long Redis takes to answer.
PROBE_EVERY = 0.01
# Seconds a client process waits for all its subscribers' first events.
FIRST_EVENT_TIMEOUT = 300.0
# Sockets besides the subscribers': the stores' pools, the sender, the logs.
SPARE_FILES = 2048
# Seconds between two readings of the CPU that other work takes.
SAMPLE_PERIOD = 0.5
# Other work on the machine takes cores from the processes measured: shown beside them.
MACHINE = "whole machine"
TARGET_SUBSCRIBERS = 5000
TARGET_P99_MS = 100.0
TARGET_RSS_MB = 1024.0

# A board: (report, views) for each entry, in its order.
Board = tuple[tuple[int, int], ...]


def _board(entries: list[dict[str, Any]]) -> Board:
    return tuple((int(entry["databaseId"]), entry["stats"]["views"]) for entry in entries)


@dataclass
class Received:
    """What one subscriber received: each event's arrival and the values it carried."""

    report: int | None  # None: the board
    arrivals: array[float] = field(default_factory=lambda: array("d"))
    views: array[int] = field(default_factory=lambda: array("q"))
    boards: list[Board] = field(default_factory=list)

    def add(self, arrival: float, data: dict[str, Any]) -> None:
        self.arrivals.append(arrival)
        if self.report is None:
            self.boards.append(_board(data["topReports"]))
        else:
            self.views.append(data["reportStats"]["views"])


@dataclass(frozen=True)
class Opened:
    """A client process's subscribers once each got its first event, or failed."""

    subscribed: int
    failures: dict[str, int]
    seconds: float


@dataclass(frozen=True)
class Ended:
    received: list[Received]
    dropped: int
    # How late the process's event loop woke, each PROBE_EVERY seconds from the first
    # events on: a delivery is timed when its client reads it, so a client that is late
    # makes every delivery it reads meanwhile look late.
    lags: list[float]


# The client side: one process of many, each with its share of the subscribers.


@dataclass(frozen=True)
class Target:
    """What the subscribers connect to, and how."""

    port: int
    # Each watched report's global id, by its database id.
    ids: dict[int, str]
    # Offer permessage-deflate, as browsers do: the gateway then compresses every event.
    deflate: bool


def client_process(target: Target, plan: list[int | None], pipe: Connection) -> None:
    # The collector would find nothing to free (no cycles are made here), but it walks
    # every event kept and every connection, pausing the receipt of events: by up to
    # 0.6 s a collection, measured with 2,500 subscribers a process.
    gc.disable()
    uvloop.run(_subscribers(target, plan, pipe))


class Subscribers:
    """One client process's share of the subscribers, each on a connection of its own."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.sockets: list[ClientConnection] = []
        self.failures: Counter[str] = Counter()
        self.dropped = 0
        self._first_events = asyncio.Semaphore(0)
        self._opening = asyncio.Semaphore(OPENING_AT_ONCE)

    async def run(self, record: Received) -> None:
        socket = await self._open(record)
        if socket is None:
            return
        try:
            while True:
                message = await socket.recv(decode=False)
                arrival = time.monotonic()
                decoded = orjson.loads(message)
                kind = decoded["type"]
                if kind == "next":
                    if not record.arrivals:
                        self._first_events.release()
                    record.add(arrival, decoded["payload"]["data"])
                elif kind == "ping":
                    await socket.send('{"type":"pong"}')
                else:
                    raise ConnectionError(f"the subscription ended: {message[:200]!r}")
        except (ConnectionClosed, ConnectionError) as error:
            if record.arrivals:
                self.dropped += 1
            else:
                self._failed(error)

    async def first_events(self, subscribers: int) -> None:
        """Until every subscriber got its first event or failed, or the time is up."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_EVENT_TIMEOUT):
                for _ in range(subscribers):
                    await self._first_events.acquire()

    async def _open(self, record: Received) -> ClientConnection | None:
        subscribe: dict[str, Any] = {"id": "1", "type": "subscribe", "payload": {"query": BOARD}}
        if record.report is not None:
            variables = {"id": self.target.ids[record.report]}
            subscribe["payload"] = {"query": STATS, "variables": variables}
        try:
            async with self._opening:
                # No ping of its own, as browsers: the gateway's keep-alive is the
                # protocol's.
                socket = await connect(
                    f"ws://127.0.0.1:{self.target.port}/graphql",
                    subprotocols=[TRANSPORT],
                    compression="deflate" if self.target.deflate else None,
                    ping_interval=None,
                    open_timeout=OPEN_TIMEOUT,
                    close_timeout=2,
                )
                self.sockets.append(socket)
                await socket.send('{"type":"connection_init","payload":{}}')
                await socket.recv(decode=False)
                await socket.send(orjson.dumps(subscribe).decode())
        except (OSError, TimeoutError, WebSocketException) as error:
            self._failed(error)
            return None
        return socket

    def _failed(self, error: BaseException) -> None:
        self.failures[type(error).__name__] += 1
        self._first_events.release()


async def _subscribers(target: Target, plan: list[int | None], pipe: Connection) -> None:
    started = time.monotonic()
    received = [Received(report) for report in plan]
    subscribers = Subscribers(target)
    tasks = [asyncio.create_task(subscribers.run(record)) for record in received]
    await subscribers.first_events(len(tasks))
    subscribed = sum(1 for record in received if record.arrivals)
    failures = subscribers.failures
    if waiting := len(received) - subscribed - failures.total():
        failures["no first event"] += waiting
    pipe.send(Opened(subscribed, dict(failures), time.monotonic() - started))
    lags: list[float] = []
    probe = asyncio.create_task(_probe_lag(lags))
    await asyncio.to_thread(pipe.recv)  # until the increments are over and settled
    probe.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(Ended(received, subscribers.dropped, lags))
    await asyncio.gather(
        *(socket.close() for socket in subscribers.sockets), return_exceptions=True
    )


async def _probe_lag(lags: list[float]) -> None:
    while True:
        asked = time.monotonic()
        await asyncio.sleep(PROBE_EVERY)
        lags.append(max(0.0, time.monotonic() - asked - PROBE_EVERY))


@dataclass
class Clients:
    processes: list[SpawnProcess]
    pipes: list[Connection]


@contextlib.contextmanager
def opened_clients(target: Target, plan: list[int | None], count: int) -> Iterator[Clients]:
    """``count`` client processes sharing ``plan`` (a report, or None for the board, per
    subscriber), each of them started; stopped on exit."""
    context = multiprocessing.get_context("spawn")
    clients = Clients([], [])
    try:
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=client_process,
                args=(target, plan[index::count], theirs),
                name=f"subscribers-{index}",
            )
            process.start()
            clients.processes.append(process)
            clients.pipes.append(ours)
        yield clients
    except BaseException:
        for process in clients.processes:
            process.terminate()
        raise
    finally:
        for process in clients.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


# The increments, through gateway B.


@dataclass
class Increments:
    # When each value was sent for: (report, views it produced) -> time.monotonic().
    sent: dict[tuple[int, int], float] = field(default_factory=dict)
    # Each recordView's answer time, and how far behind its schedule it was sent.
    durations: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0


def _view_request(port: int, report_id: str) -> bytes:
    body = orjson.dumps({"query": VIEW, "variables": {"id": report_id}})
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _sending(
    port: int, queue: asyncio.Queue[tuple[int, bytes, float] | None], increments: Increments
) -> None:
    """One keep-alive connection to B, one increment at a time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (item := await queue.get()) is not None:
            report, request, due = item
            sent = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = CONTENT_LENGTH.search(head)
            body = await reader.readexactly(int(length[1]) if length else 0)
            answered = time.monotonic()
            try:
                views = int(orjson.loads(body)["data"]["recordView"]["stats"]["views"])
            except (KeyError, TypeError, ValueError):
                increments.errors += 1
                continue
            increments.durations.append(answered - sent)
            increments.lags.append(sent - due)
            increments.sent[report, views] = sent
    except (OSError, asyncio.IncompleteReadError):
        increments.errors += 1
    finally:
        writer.close()


async def _count_views(
    port: int, reports: list[int], ids: dict[int, str], rate: float, seconds: float
) -> Increments:
    """One view every 1/rate seconds, on schedule however long each takes to answer.

    Over HTTP/1.1 written by hand: httpx spends about 2 ms of CPU a request on this
    machine, 40% of a core at 200 a second, taken from the gateways it measures."""
    increments = Increments()
    requests = {report: _view_request(port, ids[report]) for report in reports}
    queue: asyncio.Queue[tuple[int, bytes, float] | None] = asyncio.Queue()
    connections = [
        asyncio.create_task(_sending(port, queue, increments)) for _ in range(SENDING_CONNECTIONS)
    ]
    started = time.monotonic()
    for index in range(round(rate * seconds)):
        due = started + index / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        report = reports[index % len(reports)]
        queue.put_nowait((report, requests[report], due))
    for _ in connections:
        queue.put_nowait(None)
    await asyncio.gather(*connections)
    increments.seconds = time.monotonic() - started
    return increments


async def _pinging_redis(url: str, work: Awaitable[T]) -> tuple[T, list[float]]:
    """``work``'s result, and how long Redis took to answer a PING every PROBE_EVERY
    seconds meanwhile."""
    pings: list[float] = []
    redis = Redis.from_url(url)

    async def ping() -> None:
        while True:
            asked = time.monotonic()
            await redis.ping()
            pings.append(time.monotonic() - asked)
            await asyncio.sleep(PROBE_EVERY)

    probe = asyncio.create_task(ping())
    try:
        return await work, pings
    finally:
        probe.cancel()
        await redis.aclose()


# Delivery: latencies, values skipped and values lost.


@dataclass
class Delivery:
    subscribers: int = 0
    events: int = 0
    latencies: list[float] = field(default_factory=list)
    skipped: int = 0
    undelivered: int = 0
    lost: int = 0

    def add_pairs(
        self, sends: Sequence[tuple[int, float]], arrivals: Sequence[float], values: Sequence[int]
    ) -> None:
        """Each increment's delay to a subscriber, ``sends`` as (value, sent) by value:
        to the first event carrying that value or a higher one."""
        event, highest = 0, -1
        for value, sent in sends:
            while highest < value and event < len(values):
                highest = max(highest, values[event])
                event += 1
            if highest < value:
                self.undelivered += 1
                continue
            self.latencies.append(arrivals[event - 1] - sent)
            if values[event - 1] != value:
                self.skipped += 1


def _stats_delivery(
    received: list[Received], sends: dict[int, list[tuple[int, float]]], final: dict[int, int]
) -> Delivery:
    delivery = Delivery()
    for record in received:
        if record.report is None or not record.arrivals:
            continue
        delivery.subscribers += 1
        delivery.events += len(record.arrivals)
        delivery.add_pairs(sends.get(record.report, []), record.arrivals, record.views)
        if record.views[-1] != final[record.report]:
            delivery.lost += 1
    return delivery


def _board_delivery(
    received: list[Received], sends: dict[int, list[tuple[int, float]]], final: Board
) -> Delivery:
    delivery = Delivery()
    for record in received:
        if record.report is not None or not record.boards:
            continue
        delivery.subscribers += 1
        delivery.events += len(record.boards)
        boards = [dict(board) for board in record.boards]
        stayed = set.intersection(*(set(board) for board in boards))
        for report in stayed:
            values = [board[report] for board in boards]
            delivery.add_pairs(sends.get(report, []), record.arrivals, values)
        if record.boards[-1] != final:
            delivery.lost += 1
    return delivery


def _by_report(increments: Increments) -> dict[int, list[tuple[int, float]]]:
    sends: dict[int, list[tuple[int, float]]] = {}
    for (report, views), sent in sorted(increments.sent.items()):
        sends.setdefault(report, []).append((views, sent))
    return sends


# Measuring the processes.


@dataclass(frozen=True)
class Processes:
    gateway: psutil.Process
    increments: psutil.Process
    stores: list[psutil.Process]
    clients: list[psutil.Process]
    sender: psutil.Process

    def cpu(self) -> dict[str, float]:
        return {
            "gateway A (subscribers)": own_seconds(self.gateway),
            "gateway B (increments)": own_seconds(self.increments),
            "stores (PostgreSQL, MongoDB, Redis)": sum(map(tree_seconds, self.stores)),
            f"clients ({len(self.clients)} processes)": sum(map(own_seconds, self.clients)),
            "sender (this process)": own_seconds(self.sender),
        }


def _machine_seconds() -> float:
    """CPU the whole machine spent: every process's, and the kernel's own."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + times.steal


@contextlib.contextmanager
def _sampling_others(processes: Processes) -> Iterator[list[float]]:
    """The cores that work outside ``processes`` took, each SAMPLE_PERIOD of the block:
    on a shared machine a burst of it stalls the processes measured, which an average
    over the whole run hides."""
    shares: list[float] = []
    stop = threading.Event()

    def reading() -> tuple[float, float]:
        return time.monotonic(), _machine_seconds() - sum(processes.cpu().values())

    def sample() -> None:
        last = reading()
        while not stop.wait(SAMPLE_PERIOD):
            now = reading()
            shares.append(max(0.0, now[1] - last[1]) / (now[0] - last[0]))
            last = now

    sampler = threading.Thread(target=sample, name="sampling-others", daemon=True)
    sampler.start()
    try:
        yield shares
    finally:
        stop.set()
        sampler.join()


def _peak_rss_mb(process: psutil.Process) -> float:
    """The highest resident set the process has had (the kernel's VmHWM)."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {process.pid}")


def _rss_mb(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / 2**20


def _open_files_for(subscribers: int) -> None:
    """Enough descriptors for every socket, in this process and the ones it starts."""
    needed = subscribers + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard < needed and os.geteuid() != 0:
        raise SystemExit(f"{needed} open files needed, at most {hard} allowed: raise `ulimit -Hn`")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))


def _graphql(port: int, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"http://127.0.0.1:{port}/graphql",
        json={"query": query, "variables": variables},
        headers=UNCACHED,
        timeout=60,
    )
    body: dict[str, Any] = response.json()
    if body.get("errors") or not body.get("data"):
        raise RuntimeError(f"{response.status_code}: {json.dumps(body)[:2000]}")
    data: dict[str, Any] = body["data"]
    return data


def _plan(subscribers: int, board: int, watched: list[int]) -> list[int | None]:
    """A report per subscriber, evenly, and None for each board subscriber."""
    stats = subscribers - board
    return [watched[index % len(watched)] for index in range(stats)] + [None] * board


# The run.


@dataclass(frozen=True)
class Outcome:
    opened: list[Opened]
    ended: list[Ended]
    increments: Increments
    # CPU seconds of each kind of process over the increments.
    cpu: dict[str, float]
    # The most of a core that other work took in any one sampling period.
    busiest_others: float
    # Gateway A's RSS in MB: idle, subscribed, at the end, and its peak.
    memory: dict[str, float]
    # What the stores hold once it is over: each watched report's views, and the board.
    counters: dict[int, int]
    board: Board
    # Redis's answers to a PING every PROBE_EVERY seconds over the increments, in seconds:
    # every delivery goes through it (B's script publishes, A's feed reads).
    redis_pings: list[float]

    @property
    def subscribed(self) -> int:
        return sum(client.subscribed for client in self.opened)

    @property
    def dropped(self) -> int:
        return sum(client.dropped for client in self.ended)

    def deliveries(self) -> dict[str, Delivery]:
        received = [record for client in self.ended for record in client.received]
        sends = _by_report(self.increments)
        return {
            "reportStats": _stats_delivery(received, sends, self.counters),
            "topReports": _board_delivery(received, sends, self.board),
        }


def _run(arguments: argparse.Namespace, data_dir: Path) -> Outcome:
    run_command(data_dir, "seed", "--reports", str(arguments.reports), "--no-progress")
    with serving(data_dir, **SETTINGS) as gateway:
        urls = json.loads((data_dir / ENDPOINTS_FILE).read_text())
        stores = [recorded_process(data_dir, server.name) for server in SERVERS.values()]
        with serving(data_dir / "increments", **SETTINGS, **urls) as increments_gateway:
            top = _graphql(gateway.port, MOST_VIEWED, {"limit": arguments.watched})["topReports"]
            ids = {int(entry["databaseId"]): str(entry["id"]) for entry in top}
            watched = list(ids)
            print(
                f"gateway A pid {gateway.pid}, gateway B pid {increments_gateway.pid}; "
                f"{arguments.subscribers - arguments.board} subscribers on {len(watched)} "
                f"reports' reportStats, {arguments.board} on topReports(limit: {BOARD_LIMIT}), "
                f"from {arguments.client_processes} client processes; "
                f"{arguments.rate:g} increments/s for {arguments.seconds:g} s",
                flush=True,
            )
            measured = psutil.Process(gateway.pid)
            memory = {"idle": _rss_mb(measured)}
            plan = _plan(arguments.subscribers, arguments.board, watched)
            target = Target(gateway.port, ids, arguments.deflate)
            with opened_clients(target, plan, arguments.client_processes) as clients:
                opened: list[Opened] = [pipe.recv() for pipe in clients.pipes]
                memory["subscribed"] = _rss_mb(measured)
                processes = Processes(
                    measured,
                    psutil.Process(increments_gateway.pid),
                    [store for store in stores if store is not None],
                    [psutil.Process(process.pid) for process in clients.processes],
                    psutil.Process(),
                )
                counting = (increments_gateway.port, watched, ids, arguments.rate)
                uvloop.run(_count_views(*counting, WARM_UP_SECONDS))
                before = processes.cpu() | {MACHINE: _machine_seconds()}
                with _sampling_others(processes) as others:
                    increments, pings = uvloop.run(
                        _pinging_redis(
                            urls["redis_url"], _count_views(*counting, arguments.seconds)
                        )
                    )
                after = processes.cpu() | {MACHINE: _machine_seconds()}
                memory["end"] = _rss_mb(measured)
                memory["peak"] = _peak_rss_mb(measured)
                time.sleep(arguments.settle)
                for pipe in clients.pipes:
                    pipe.send("stop")
                ended: list[Ended] = [pipe.recv() for pipe in clients.pipes]
            final = _graphql(gateway.port, FINAL, {"ids": list(ids.values()), "limit": BOARD_LIMIT})
    return Outcome(
        opened,
        ended,
        increments,
        {name: after[name] - before[name] for name in before},
        max(others, default=0.0),
        memory,
        {int(node["databaseId"]): node["stats"]["views"] for node in final["nodes"]},
        _board(final["topReports"]),
        pings,
    )


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else 0.0


def _report(arguments: argparse.Namespace, outcome: Outcome) -> None:
    failures: Counter[str] = Counter()
    for client in outcome.opened:
        failures.update(client.failures)
    print(
        f"\n{outcome.subscribed} of {arguments.subscribers} subscribers subscribed in "
        f"{max(client.seconds for client in outcome.opened):.1f} s"
        + (f" (failed: {dict(failures)})" if failures else "")
        + (f"; {outcome.dropped} dropped later" if outcome.dropped else "")
    )
    increments = outcome.increments
    durations = sorted(increments.durations)
    print(
        f"{len(increments.sent)} increments through gateway B in {increments.seconds:.1f} s "
        f"({len(increments.sent) / increments.seconds:.1f}/s), {increments.errors} errors; "
        f"recordView p50 {_percentile(durations, 0.5):.1f} ms, "
        f"p99 {_percentile(durations, 0.99):.1f} ms; sent behind schedule by "
        f"{_percentile(sorted(increments.lags), 0.99):.1f} ms at p99"
    )
    lags = sorted(lag for client in outcome.ended for lag in client.lags)
    print(
        f"the client processes' event loops ran late by p50 {_percentile(lags, 0.5):.1f} ms, "
        f"p99 {_percentile(lags, 0.99):.1f} ms, max {_percentile(lags, 1.0):.1f} ms "
        f"(every {PROBE_EVERY * 1000:.0f} ms from the first events on)"
    )
    pings = sorted(outcome.redis_pings)
    print(
        f"Redis answered a PING every {PROBE_EVERY * 1000:.0f} ms in p50 "
        f"{_percentile(pings, 0.5):.1f} ms, p99 {_percentile(pings, 0.99):.1f} ms, "
        f"max {_percentile(pings, 1.0):.1f} ms"
    )
    produced: dict[int, int] = {}
    for report, views in increments.sent:
        produced[report] = max(views, produced.get(report, 0))
    if any(outcome.counters[report] != views for report, views in produced.items()):
        print("the counters read back differ from the last values the increments produced")
    every = _print_deliveries(outcome.deliveries())
    _print_processes(outcome, increments.seconds)
    p99 = _percentile(sorted(every.latencies), 0.99)
    connected = outcome.subscribed - outcome.dropped
    peak = outcome.memory["peak"]
    checks = [
        (f"subscribers {connected} >= {TARGET_SUBSCRIBERS}", connected >= TARGET_SUBSCRIBERS),
        (
            f"p99 {p99:.1f} ms < {TARGET_P99_MS:.0f} ms",
            bool(every.latencies) and p99 < TARGET_P99_MS,
        ),
        (f"lost final values {every.lost} = 0", every.lost == 0),
        (f"gateway A peak RSS {peak:.0f} MB < {TARGET_RSS_MB:.0f} MB", peak < TARGET_RSS_MB),
    ]
    print("\ntargets:")
    for label, met in checks:
        print(f"  {label:<40} {'met' if met else 'NOT MET'}")


def _print_deliveries(deliveries: dict[str, Delivery]) -> Delivery:
    """The table of deliveries, by subscription and in all; returns the latter."""
    print(
        "\ndelivery latency over every (subscriber, increment) pair, from the send to B to "
        "the first event with that value or a later one"
    )
    print(
        f"{'subscription':<14} {'subscribers':>11} {'events':>8} {'pairs':>9} {'skipped':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'undelivered':>11} {'lost final':>10}"
    )
    every = Delivery()
    for name, delivery in deliveries.items():
        _delivery_row(name, delivery)
        every.subscribers += delivery.subscribers
        every.events += delivery.events
        every.latencies += delivery.latencies
        every.skipped += delivery.skipped
        every.undelivered += delivery.undelivered
        every.lost += delivery.lost
    _delivery_row("all", every)
    print(
        "skipped: values coalesced into a later event (delivered by it); undelivered: pairs "
        "whose value never arrived"
    )
    return every


def _delivery_row(name: str, delivery: Delivery) -> None:
    ordered = sorted(delivery.latencies)
    print(
        f"{name:<14} {delivery.subscribers:>11} {delivery.events:>8} {len(ordered):>9} "
        f"{delivery.skipped:>8} {_percentile(ordered, 0.5):>7.1f} "
        f"{_percentile(ordered, 0.99):>7.1f} {_percentile(ordered, 1.0):>7.1f} "
        f"{delivery.undelivered:>11} {delivery.lost:>10}"
    )


def _print_processes(outcome: Outcome, window: float) -> None:
    print(f"\nCPU over the {window:.1f} s of increments")
    print(f"{'process':<38} {'CPU s':>7} {'% of a core':>11}")
    cpu = dict(outcome.cpu)
    machine = cpu.pop(MACHINE)
    # The machine's counters and the processes' are read a moment apart: a few clock
    # ticks of difference, which must not show as negative work.
    cpu["others (outside the benchmark)"] = max(0.0, machine - sum(cpu.values()))
    cpu[f"{MACHINE} ({psutil.cpu_count()} cores)"] = machine
    for name, seconds in cpu.items():
        print(f"{name:<38} {seconds:>7.2f} {seconds / window * 100:>10.0f}%")
    print(
        f"others took up to {outcome.busiest_others * 100:.0f}% of a core in the busiest "
        f"{SAMPLE_PERIOD:g} s"
    )
    memory = outcome.memory
    each = (memory["subscribed"] - memory["idle"]) * 1024 / max(outcome.subscribed, 1)
    print(
        f"\ngateway A memory: {memory['idle']:.0f} MB RSS before the subscribers, "
        f"{memory['subscribed']:.0f} MB with them ({each:.0f} KB each), "
        f"{memory['end']:.0f} MB at the end, peak {memory['peak']:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=TARGET_SUBSCRIBERS)
    parser.add_argument(
        "--board", type=int, default=100, help="subscribers on topReports (of --subscribers)"
    )
    parser.add_argument(
        "--watched",
        type=int,
        default=100,
        choices=range(1, MAX_TOP_REPORTS + 1),
        metavar=f"1..{MAX_TOP_REPORTS}",
        help="reports subscribed to and counted, those with the most views",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="increments a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--reports", type=int, default=200, help="reports seeded")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument(
        "--deflate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="subscribers offer permessage-deflate, as browsers do",
    )
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds from the last increment to the check"
    )
    arguments = parser.parse_args()
    if not 0 <= arguments.board <= arguments.subscribers:
        parser.error("--board must be between 0 and --subscribers")
    _open_files_for(arguments.subscribers)
    data_dir = Path(tempfile.mkdtemp(prefix="gateway-bench-subscriptions-"))
    try:
        outcome = _run(arguments, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    _report(arguments, outcome)


if __name__ == "__main__":
    main()
