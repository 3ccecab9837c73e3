"""The set of embedded servers behind one data directory, and the lock that makes it one owner's."""

from __future__ import annotations

import fcntl
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Self

from gateway.embedded.mongo import MongoServer
from gateway.embedded.postgres import PostgresServer
from gateway.embedded.process import EmbeddedServer
from gateway.embedded.valkey import ValkeyServer

logger = logging.getLogger(__name__)

LOCK_FILE = "gateway.lock"
ENDPOINTS_FILE = "endpoints.json"


class DataDirectoryInUseError(RuntimeError):
    def __init__(self, data_dir: Path, owner: str) -> None:
        super().__init__(
            f"data directory {data_dir} is in use by another gateway (pid {owner}); "
            "stop it first, or give this one another GATEWAY_DATA_DIR or external store URLs"
        )
        self.data_dir = data_dir


@dataclass(frozen=True)
class StoreUrls:
    database_url: str | None = None
    mongo_url: str | None = None
    redis_url: str | None = None


class EmbeddedStores:
    """Starts the embedded servers for the stores that have no URL, and stops them.

    One gateway owns a data directory at a time, through an advisory lock that the kernel
    releases when the owner dies however it dies. Whoever takes the lock may therefore stop
    any server still recorded in the directory: it can only be an orphan. A command that
    only needs the stores for a while (migrate, seed) may instead *attach* to the servers
    of the gateway that owns the directory.
    """

    def __init__(self, data_dir: Path, wanted: StoreUrls) -> None:
        self.data_dir = data_dir.resolve()
        self.wanted = wanted
        self.servers: list[EmbeddedServer] = []
        self._lock: IO[str] | None = None

    def start(self, *, attach: bool = False) -> StoreUrls:
        needed = [
            name for name in ("database_url", "mongo_url", "redis_url")
            if getattr(self.wanted, name) is None
        ]  # fmt: skip
        if not needed:
            return self.wanted
        if not self.data_dir.exists():
            self.data_dir.mkdir(parents=True)
            # Traversable (not listable) by the unprivileged account that runs PostgreSQL
            # when we are root. A directory that already existed keeps its mode: if that
            # account cannot reach it, the cluster goes elsewhere (see postgres.py).
            self.data_dir.chmod(0o711)
        owner = self._take_lock()
        if owner is not None:
            if attach:
                return self._attach(owner)
            raise DataDirectoryInUseError(self.data_dir, owner)
        factories: dict[str, type[EmbeddedServer]] = {
            "database_url": PostgresServer,
            "mongo_url": MongoServer,
            "redis_url": ValkeyServer,
        }
        self.servers = [factories[name](self.data_dir) for name in needed]
        try:
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
        if self._lock is not None:
            (self.data_dir / ENDPOINTS_FILE).unlink(missing_ok=True)
        self._release_lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def owner(self) -> str | None:
        """The pid of the gateway that owns the directory now, if any."""
        if not (self.data_dir / LOCK_FILE).exists():
            return None
        owner = self._take_lock()
        if owner is None:
            self._release_lock()
        return owner

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _take_lock(self) -> str | None:
        """Take the directory's lock; on failure, return the owner's pid as it wrote it."""
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
        lock.write(str(os.getpid()))
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
