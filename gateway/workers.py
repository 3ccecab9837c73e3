"""``gateway serve --workers N``: a supervising parent and N worker processes on one port.

The parent does what there must be one of: it starts the embedded servers (owning the data
directory, its lock and its watchdog as a single ``serve`` does), applies the migrations,
reconciles the stores once at start-up, and holds the listening sockets: one per worker, all
on one port (``SO_REUSEPORT``), so that the kernel spreads new connections evenly over the
workers. On one shared socket, whichever worker woke first accepted every connection
waiting, and a load generator's burst of connections could all go to one worker. A worker
put in place of one that exited takes over its socket, and the connections queued there.
Workers get the stores' URLs in their environment and never start or stop a server. Jobs
that several processes run (counter snapshots) already take turns through Redis.

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
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE

from core.settings import ENV_PREFIX, Settings
from core.store_urls import StoreUrls
from core.waiting import set_within
from gateway.metrics import MULTIPROCESS_DIRECTORY
from gateway.runtime import connected_stores, reconcile_stores, started_stores
from gateway.server import STOP_ALLOWANCE, exit_if_stuck, shutdown_deadline

logger = logging.getLogger(__name__)

# How often the parent looks for workers that have exited. It also bounds how often a
# worker that keeps failing is restarted.
POLL_INTERVAL = 0.5
# As many connections as a single process's listener queues.
BACKLOG = 2048
# Not ``-m``: the package imports the module first, and runpy warns about that.
ENTRY_POINT = "import sys; from gateway.worker_process import main; sys.exit(main(sys.argv[1:]))"


def supervise(settings: Settings) -> int:
    """Serve with ``settings.workers`` processes until SIGTERM or SIGINT."""
    signalled = threading.Event()
    # Each worker keeps its own deadline; the parent's adds the time to stop the servers.
    threading.Thread(
        target=exit_if_stuck,
        args=(signalled, shutdown_deadline(settings) + STOP_ALLOWANCE),
        name="shutdown-deadline",
        daemon=True,
    ).start()
    return asyncio.run(_supervise(settings, signalled))


async def _supervise(settings: Settings, signalled: threading.Event) -> int:
    stop = asyncio.Event()

    def on_signal() -> None:
        signalled.set()
        stop.set()

    for received in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(received, on_signal)
    async with (
        started_stores(settings) as urls,
        connected_stores(settings, urls, apply_migrations=settings.is_development) as connections,
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
            with shared_metrics() as directory:
                return await Workers(settings, urls, listeners, directory).run(stop)
        finally:
            stop.set()
            await reconciliation


@contextmanager
def shared_metrics() -> Iterator[Path]:
    """Where the workers write their metrics for a scrape to add up (see gateway/metrics.py):
    ``PROMETHEUS_MULTIPROC_DIR`` if it is set, emptied of an earlier run's files, or a
    directory of this run's own, removed at its end."""
    given = os.environ.get(MULTIPROCESS_DIRECTORY)
    if given is None:
        with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as directory:
            yield Path(directory)
        return
    emptied = Path(given)
    emptied.mkdir(parents=True, exist_ok=True)
    for stale in emptied.glob("*.db"):
        stale.unlink()
    yield emptied


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


class Workers:
    """The worker processes of one parent, kept at their number until told to stop."""

    def __init__(
        self, settings: Settings, urls: StoreUrls, listeners: list[socket.socket], metrics: Path
    ) -> None:
        self._listeners = listeners
        self._metrics = metrics
        self._deadline = shutdown_deadline(settings)
        # What a worker reads its settings from: the parent's own, with the bound port
        # (the setting may be 0) and every store's URL, embedded or not.
        self._environment = (
            os.environ
            | {f"{ENV_PREFIX}{name.upper()}": url for name, url in asdict(urls).items()}
            | {
                f"{ENV_PREFIX}HOST": settings.host,
                f"{ENV_PREFIX}PORT": str(listeners[0].getsockname()[1]),
                MULTIPROCESS_DIRECTORY: str(metrics),
            }
        )

    async def run(self, stop: asyncio.Event) -> int:
        """Keep the workers running until ``stop`` is set; then stop them, gracefully."""
        supervisor = os.pidfd_open(os.getpid())
        processes: list[subprocess.Popen[bytes]] = []
        failed = False
        try:
            processes.extend(self._start(slot, supervisor) for slot in range(len(self._listeners)))
            while not failed and not await set_within(stop, POLL_INTERVAL):
                failed = self._replace_exited(processes, supervisor)
        finally:
            os.close(supervisor)
            # Once the workers have closed theirs too, the port refuses new connections.
            for listener in self._listeners:
                listener.close()
            await self._stop(processes)
        return 1 if failed else 0

    def _replace_exited(self, processes: list[subprocess.Popen[bytes]], supervisor: int) -> bool:
        """Start a worker in place of each one that has exited; True if one failed to start."""
        for slot, process in enumerate(processes):
            code = process.poll()
            if code is None:
                continue
            if code == STARTUP_FAILURE:
                # The application or its configuration is broken: every worker started
                # in its place would fail the same way.
                logger.error("worker %d failed to start; stopping", process.pid)
                return True
            logger.warning("worker %d exited (%s); starting another", process.pid, _describe(code))
            # Its counts stay in the sums; its gauges go.
            multiprocess.mark_process_dead(process.pid, str(self._metrics))  # type: ignore[no-untyped-call]
            processes[slot] = self._start(slot, supervisor)
        return False

    def _start(self, slot: int, supervisor: int) -> subprocess.Popen[bytes]:
        listener = self._listeners[slot].fileno()
        return subprocess.Popen(
            [sys.executable, "-c", ENTRY_POINT, str(listener), str(supervisor)],
            env=self._environment,
            pass_fds=(listener, supervisor),
        )

    async def _stop(self, processes: list[subprocess.Popen[bytes]]) -> None:
        for process in processes:
            # SIGTERM even after a Ctrl-C has sent them SIGINT: a second SIGINT would
            # make uvicorn exit at once, without finishing requests.
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        # A worker exits by its own deadline; this one only covers a worker that cannot.
        deadline = time.monotonic() + self._deadline
        while any(process.poll() is None for process in processes):
            if time.monotonic() > deadline:
                for process in processes:
                    process.kill()
                    process.wait()
                return
            await asyncio.sleep(0.05)


def _describe(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"
