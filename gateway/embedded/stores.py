"""The set of embedded servers behind one data directory, and the lock that makes it one owner's."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import IO, Self

from core.store_urls import StoreUrls
from gateway.embedded.mongo import MongoServer
from gateway.embedded.postgres import PostgresServer
from gateway.embedded.process import (
    POLL_INTERVAL,
    STOP_TIMEOUT,
    EmbeddedServer,
    ServerStartError,
    stop_recorded,
)
from gateway.embedded.valkey import ValkeyServer
from gateway.embedded.watchdog import Watchdog

logger = logging.getLogger(__name__)

LOCK_FILE = "gateway.lock"
ENDPOINTS_FILE = "endpoints.json"
# Written in the lock file by a watchdog while it stops the servers of a gateway that died.
# A gateway or command that starts meanwhile waits for it (at most the time the servers may
# take to stop) instead of refusing: a supervisor restarts a killed gateway at once.
WATCHDOG_OWNER = "watchdog"
WATCHDOG_WAIT = 2 * STOP_TIMEOUT
# The server for each store URL that is left unset.
SERVERS: dict[str, type[EmbeddedServer]] = {
    "database_url": PostgresServer,
    "mongo_url": MongoServer,
    "redis_url": ValkeyServer,
}


class DataDirectoryInUseError(RuntimeError):
    def __init__(self, data_dir: Path, owner: str) -> None:
        super().__init__(
            f"data directory {data_dir} is in use by another gateway (pid {owner}); "
            "stop it first, or give this one another GATEWAY_DATA_DIR or external store URLs"
        )
        self.data_dir = data_dir


class EmbeddedStores:
    """Starts the embedded servers for the stores that have no URL, and stops them.

    One gateway owns a data directory at a time, through an advisory lock that the kernel
    releases when the owner dies however it dies. Whoever takes the lock may therefore stop
    any server still recorded in the directory: it can only be an orphan. A command that
    only needs the stores for a while (migrate, seed) may instead *attach* to the servers
    of the gateway that owns the directory.

    The owner also starts a watchdog process that stops the servers if the owner dies
    without stopping them (see watchdog.py); a command that attaches starts none.
    """

    def __init__(self, data_dir: Path, wanted: StoreUrls) -> None:
        self.data_dir = data_dir.resolve()
        self.wanted = wanted
        self.servers: list[EmbeddedServer] = []
        self._lock: IO[str] | None = None
        self._watchdog: Watchdog | None = None

    def start(self, *, attach: bool = False) -> StoreUrls:
        needed = [name for name in SERVERS if getattr(self.wanted, name) is None]
        if not needed:
            return self.wanted
        if not self.data_dir.exists():
            self.data_dir.mkdir(parents=True)
            # Traversable (not listable) by the unprivileged account that runs PostgreSQL
            # when we are root. A directory that already existed keeps its mode: if that
            # account cannot reach it, the cluster goes elsewhere (see postgres.py).
            self.data_dir.chmod(0o711)
        owner = self._take_lock_after_watchdog()
        if owner is not None:
            if attach:
                return self._attach(owner)
            raise DataDirectoryInUseError(self.data_dir, owner)
        self.servers = [SERVERS[name](self.data_dir) for name in needed]
        try:
            self._watchdog = Watchdog.start(self.data_dir)
            with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
                started = list(pool.map(lambda server: server.start(), self.servers))
        except BaseException:
            self.stop()
            raise
        urls = StoreUrls(**{
            **asdict(self.wanted), **dict(zip(needed, started, strict=True))
        })  # fmt: skip
        self._write_endpoints(urls)
        return urls

    def stop(self) -> None:
        with ThreadPoolExecutor(max_workers=max(len(self.servers), 1)) as pool:
            list(pool.map(lambda server: server.stop(), self.servers))
        self.servers = []
        if self._watchdog is not None:
            self._watchdog.release()
            self._watchdog = None
        if self._lock is not None:
            (self.data_dir / ENDPOINTS_FILE).unlink(missing_ok=True)
        self._release_lock()

    def restart_exited(self) -> None:
        """Start again, on their ports, the servers that ended without being stopped (a
        crash, a kill): the clients' pools reconnect to them as to any restarted store."""
        for server in self.servers:
            if server.exited:
                assert server.process is not None
                logger.warning(
                    "embedded %s exited (status %s); starting it again on port %s",
                    server.name,
                    server.process.returncode,
                    server.port,
                )
                try:
                    server.restart()
                except ServerStartError:
                    logger.exception("embedded %s did not start again; retrying", server.name)

    def stop_orphans(self) -> bool:
        """Stop the servers recorded in the directory and return True, unless another
        gateway owns the directory: what a watchdog does when its gateway has died."""
        if self._take_lock(f"{WATCHDOG_OWNER} {os.getpid()}") is not None:
            return False

        def stop(server: type[EmbeddedServer]) -> None:
            stop_recorded(self.data_dir, server.name, server.stop_signal)

        try:
            with ThreadPoolExecutor(max_workers=len(SERVERS)) as pool:
                list(pool.map(stop, SERVERS.values()))
            (self.data_dir / ENDPOINTS_FILE).unlink(missing_ok=True)
        finally:
            self._release_lock()
        return True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def owner(self) -> str | None:
        """The pid of the gateway that owns the directory now, if any."""
        if not (self.data_dir / LOCK_FILE).exists():
            return None
        owner = self._take_lock_after_watchdog()
        if owner is None:
            self._release_lock()
        return owner

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _take_lock_after_watchdog(self) -> str | None:
        owner = self._take_lock()
        deadline = time.monotonic() + WATCHDOG_WAIT
        while owner and owner.startswith(WATCHDOG_OWNER) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
            owner = self._take_lock()
        return owner

    def _take_lock(self, holder: str | None = None) -> str | None:
        """Take the directory's lock; on failure, return the owner as it wrote itself."""
        lock = (self.data_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "unknown"
            lock.close()
            return owner
        lock.seek(0)
        lock.truncate()
        lock.write(holder or str(os.getpid()))
        lock.flush()
        self._lock = lock
        return None

    def _write_endpoints(self, urls: StoreUrls) -> None:
        path = self.data_dir / ENDPOINTS_FILE
        path.with_suffix(".tmp").write_text(json.dumps(asdict(urls)))
        os.replace(path.with_suffix(".tmp"), path)

    def _attach(self, owner: str) -> StoreUrls:
        try:
            recorded = json.loads((self.data_dir / ENDPOINTS_FILE).read_text())
        except (OSError, ValueError) as error:
            raise DataDirectoryInUseError(self.data_dir, owner) from error
        logger.info("using the embedded servers of the gateway with pid %s", owner)
        return StoreUrls(**{
            name: getattr(self.wanted, name) or recorded.get(name)
            for name in ("database_url", "mongo_url", "redis_url")
        })  # fmt: skip
