"""``gateway serve --workers N``: a supervising parent and N worker processes on one port.

The parent does what there must be one of: it starts the embedded servers (owning the data
directory, its lock and its watchdog as a single ``serve`` does), applies the migrations,
reconciles the stores once at start-up, and holds the listening sockets: one per worker, all
on one port (``SO_REUSEPORT``), so that the kernel spreads new connections evenly over the
workers. On one shared socket, whichever worker woke first accepted every connection
waiting, and a load generator's burst of connections could all go to one worker. A worker
put in place of one that exited takes over its socket, and the connections queued there.
Workers are forked from a template process that imports the application once, while the
embedded servers start (gateway/worker_process.py). They get the stores' URLs in their
environment and never start or stop a server. Jobs that several processes run (counter
snapshots) already take turns through Redis.

A small supervisor rather than uvicorn's (``uvicorn.supervisors.Multiprocess``): uvicorn's
workers are plain ``uvicorn.Server`` objects rebuilt from a pickled config, so they would
lose the shutdown deadline of ``gateway.server``, and the application would have to be
rebuilt from the parent's own environment, changed to carry the URLs. Nor do its workers
notice the parent's death: a parent killed outright would leave them serving, on stores
the watchdog has stopped. What is left to write is short: start N processes, replace the
ones that exit, and pass the signal on at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE

from core.settings import ENV_PREFIX, Settings
from core.store_urls import StoreUrls
from core.waiting import set_within
from gateway.metrics import MULTIPROCESS_DIRECTORY
from gateway.runtime import connected_stores, reconcile_stores, started_stores
from gateway.server import STOP_ALLOWANCE, SignalLatch, exit_if_stuck, shutdown_deadline
from gateway.worker_process import MESSAGE_LIMIT

logger = logging.getLogger(__name__)

# The least time between two starts of a worker in one place.
RESTART_INTERVAL = 0.5
# As many connections as a single process's listener queues.
BACKLOG = 2048
# Not ``-m``: the package imports the module first, and runpy warns about that.
TEMPLATE_ENTRY = (
    "import sys; from gateway.worker_process import template; sys.exit(template(sys.argv[1:]))"
)
# How long the template may take to exit once its channel is closed: it has nothing to do.
GONE_TIMEOUT = 5.0


def supervise(settings: Settings) -> int:
    """Serve with ``settings.workers`` processes until SIGTERM or SIGINT."""
    signalled = SignalLatch()
    # Each worker keeps its own deadline; the parent's adds the time to stop the servers.
    threading.Thread(
        target=exit_if_stuck,
        args=(signalled, shutdown_deadline(settings) + STOP_ALLOWANCE),
        name="shutdown-deadline",
        daemon=True,
    ).start()
    return asyncio.run(_supervise(settings, signalled))


async def _supervise(settings: Settings, signalled: SignalLatch) -> int:
    stop = asyncio.Event()

    def on_signal() -> None:
        signalled.set()
        stop.set()

    for received in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(received, on_signal)
    # The template imports the application while the embedded servers start.
    with shared_metrics() as metrics, Template.started(metrics) as template:
        async with (
            started_stores(settings) as urls,
            connected_stores(
                settings, urls, apply_migrations=settings.is_development
            ) as connections,
        ):
            if stop.is_set():
                return 0
            try:
                listeners = _listen(settings)
            except OSError as error:
                logger.error("cannot listen on %s:%d: %s", settings.host, settings.port, error)
                return 1
            reconciliation = asyncio.create_task(reconcile_stores(connections, stop))
            try:
                return await Workers(settings, urls, listeners, metrics.directory, template).run(
                    stop
                )
            finally:
                stop.set()
                await reconciliation


@dataclass(frozen=True)
class SharedMetrics:
    """Where the workers write their metrics for a scrape to add up (see gateway/metrics.py),
    and whether the directory is this run's own, to be removed at its end."""

    directory: Path
    own: bool


@contextmanager
def shared_metrics() -> Iterator[SharedMetrics]:
    """``PROMETHEUS_MULTIPROC_DIR`` if it is set, emptied of an earlier run's files, or a
    directory of this run's own, removed at its end: by this process, or, if it is killed,
    by the template once the workers have exited."""
    given = os.environ.get(MULTIPROCESS_DIRECTORY)
    if given is None:
        directory = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
        try:
            yield SharedMetrics(directory, own=True)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    emptied = Path(given)
    emptied.mkdir(parents=True, exist_ok=True)
    for stale in emptied.glob("*.db"):
        stale.unlink()
    yield SharedMetrics(emptied, own=False)


def _listen(settings: Settings) -> list[socket.socket]:
    """A listening socket per worker, on the port of the first (the setting may be 0).

    A port given is bound alone first: sockets that all allow the port to be shared would
    share it with another gateway of the same user already serving there, where one
    listening socket is refused it.
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    if settings.port:
        socket.create_server((settings.host, settings.port), family=family).close()
    listeners: list[socket.socket] = []
    try:
        for _ in range(settings.workers):
            port = listeners[0].getsockname()[1] if listeners else settings.port
            listeners.append(
                socket.create_server(
                    (settings.host, port), family=family, backlog=BACKLOG, reuse_port=True
                )
            )
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    logger.info(
        "serving on %s:%d with %d workers",
        settings.host,
        listeners[0].getsockname()[1],
        settings.workers,
    )
    return listeners


class TemplateGoneError(RuntimeError):
    """The template process exited while the supervisor still needed it."""


class Template:
    """The supervisor's end of the process that workers are forked from (see
    gateway/worker_process.py)."""

    def __init__(self, process: subprocess.Popen[bytes], channel: socket.socket) -> None:
        self.process = process
        self._channel = channel
        # Exits reported while the supervisor was waiting for a worker to start.
        self._exits: deque[tuple[int, int]] = deque()

    @classmethod
    @contextmanager
    def started(cls, metrics: SharedMetrics) -> Iterator[Template]:
        """A template, stopped at the end."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        supervisor = os.pidfd_open(os.getpid())
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    TEMPLATE_ENTRY,
                    str(theirs.fileno()),
                    str(supervisor),
                    *([str(metrics.directory)] if metrics.own else []),
                ],
                # prometheus_client chooses how to keep values when it is imported.
                env=os.environ | {MULTIPROCESS_DIRECTORY: str(metrics.directory)},
                pass_fds=(theirs.fileno(), supervisor),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(supervisor)
        ours.setblocking(False)
        try:
            yield cls(process, ours)
        finally:
            ours.close()
            try:
                process.wait(timeout=GONE_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    async def fork(self, listener: socket.socket, environment: dict[str, str]) -> Worker:
        """A worker forked from the template, serving on ``listener``."""
        socket.send_fds(self._channel, [json.dumps(environment).encode()], [listener.fileno()])
        while "started" not in (answer := await self._receive()):
            self._exits.append((answer["exited"], answer["code"]))
        return Worker(answer["started"])

    async def next_exit(self, stop: asyncio.Event) -> tuple[int, int] | None:
        """The pid and exit code of the next worker to exit; None once ``stop`` is set."""
        while not self._exits:
            receiving = asyncio.ensure_future(self._receive())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                receiving.cancel()
                stopping.cancel()
            if not receiving.done() or receiving.cancelled():
                return None
            answer = receiving.result()
            self._exits.append((answer["exited"], answer["code"]))
        return self._exits.popleft()

    async def _receive(self) -> dict[str, int]:
        message = await asyncio.get_running_loop().sock_recv(self._channel, MESSAGE_LIMIT)
        if not message:
            raise TemplateGoneError
        answer: dict[str, int] = json.loads(message)
        return answer


class Worker:
    """A worker forked from the template, signalled through a pidfd: its pid, once the
    template has reaped it, could name another process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self._pidfd = os.pidfd_open(pid)

    def has_exited(self) -> bool:
        return bool(select.select([self._pidfd], [], [], 0)[0])

    def send_signal(self, sent: signal.Signals) -> None:
        with suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, sent)

    def close(self) -> None:
        os.close(self._pidfd)


class Workers:
    """The worker processes of one parent, kept at their number until told to stop."""

    def __init__(
        self,
        settings: Settings,
        urls: StoreUrls,
        listeners: list[socket.socket],
        metrics: Path,
        template: Template,
    ) -> None:
        self._listeners = listeners
        self._metrics = metrics
        self._template = template
        self._deadline = shutdown_deadline(settings)
        # What a worker reads its settings from: the parent's own, with the bound port
        # (the setting may be 0) and every store's URL, embedded or not.
        self._environment = (
            dict(os.environ)
            | {f"{ENV_PREFIX}{name.upper()}": url for name, url in asdict(urls).items()}
            | {
                f"{ENV_PREFIX}HOST": settings.host,
                f"{ENV_PREFIX}PORT": str(listeners[0].getsockname()[1]),
                MULTIPROCESS_DIRECTORY: str(metrics),
            }
        )

    async def run(self, stop: asyncio.Event) -> int:
        """Keep the workers running until ``stop`` is set; then stop them, gracefully."""
        workers: list[Worker] = []
        try:
            for listener in self._listeners:
                workers.append(await self._template.fork(listener, self._environment))
            while (exited := await self._template.next_exit(stop)) is not None:
                if not await self._replace(workers, *exited, stop):
                    return 1
        except TemplateGoneError:
            logger.error("the process that workers are forked from has exited; stopping")
            return 1
        finally:
            # Once the workers have closed theirs too, the port refuses new connections.
            for listener in self._listeners:
                listener.close()
            await self._stop(workers)
        return 0

    async def _replace(
        self, workers: list[Worker], pid: int, code: int, stop: asyncio.Event
    ) -> bool:
        """Start a worker in place of the one that exited; False if it failed to start."""
        slot, exited = next(
            (slot, worker) for slot, worker in enumerate(workers) if worker.pid == pid
        )
        if code == STARTUP_FAILURE:
            # The application or its configuration is broken: every worker started in its
            # place would fail the same way.
            logger.error("worker %d failed to start; stopping", pid)
            return False
        logger.warning("worker %d exited (%s); starting another", pid, _describe(code))
        # Its counts stay in the sums; its gauges go.
        multiprocess.mark_process_dead(pid, str(self._metrics))  # type: ignore[no-untyped-call]
        # A worker that keeps failing soon after it starts is started again at this pace.
        if await set_within(stop, exited.started + RESTART_INTERVAL - time.monotonic()):
            return True
        exited.close()
        workers[slot] = await self._template.fork(self._listeners[slot], self._environment)
        return True

    async def _stop(self, workers: list[Worker]) -> None:
        for worker in workers:
            # SIGTERM even after a Ctrl-C has sent them SIGINT: a second SIGINT would
            # make uvicorn exit at once, without finishing requests.
            worker.send_signal(signal.SIGTERM)
        # A worker exits by its own deadline; this one only covers a worker that cannot.
        deadline = time.monotonic() + self._deadline
        while not all(worker.has_exited() for worker in workers):
            if time.monotonic() > deadline:
                for worker in workers:
                    worker.send_signal(signal.SIGKILL)
                break
            await asyncio.sleep(0.05)
        for worker in workers:
            worker.close()


def _describe(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"
