"""Bringing the stores up for a process (embedded servers if needed, then clients), and down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from core.connections import Connections, open_connections
from core.response_cache import ResponseCache
from core.settings import Settings
from core.sources import SNAPSHOT_TAG
from core.store_urls import StoreUrls
from core.stores import not_answering
from core.waiting import set_within
from datasources.counter_snapshots import snapshot_counters
from datasources.counters import take_turn
from datasources.report_writes import reconcile_documents
from gateway import migrate
from gateway.embedded import EmbeddedStores

logger = logging.getLogger(__name__)

SNAPSHOT_FAILURES = (RedisError, DBAPIError, OSError, TimeoutError)
# Seconds between looks at the embedded servers, to start again one that died.
SUPERVISE_EVERY = 1.0


@asynccontextmanager
async def running_stores(
    settings: Settings, *, attach: bool = False, apply_migrations: bool = False
) -> AsyncIterator[Connections]:
    """Yield connected clients for all three stores.

    ``attach`` lets a short-lived command use the embedded servers of a gateway that
    already owns the data directory, instead of failing because it is taken.
    """
    async with (
        started_stores(settings, attach=attach) as urls,
        connected_stores(settings, urls, apply_migrations=apply_migrations) as connections,
    ):
        yield connections


@asynccontextmanager
async def started_stores(settings: Settings, *, attach: bool = False) -> AsyncIterator[StoreUrls]:
    """Yield every store's URL: the settings' own, or an embedded server's, started here."""
    embedded = EmbeddedStores(
        settings.data_dir,
        StoreUrls(
            database_url=settings.database_url,
            mongo_url=settings.mongo_url,
            redis_url=settings.redis_url,
        ),
    )
    urls = await asyncio.to_thread(embedded.start, attach=attach)
    stop = asyncio.Event()
    supervisor = asyncio.create_task(_keep_running(embedded, stop))
    try:
        yield urls
    finally:
        stop.set()
        await supervisor
        await asyncio.to_thread(embedded.stop)


async def _keep_running(embedded: EmbeddedStores, stop: asyncio.Event) -> None:
    """Start again every embedded server that dies, until ``stop`` is set."""
    while embedded.servers and not await set_within(stop, SUPERVISE_EVERY):
        await asyncio.to_thread(embedded.restart_exited)


@asynccontextmanager
async def connected_stores(
    settings: Settings, urls: StoreUrls, *, apply_migrations: bool = False
) -> AsyncIterator[Connections]:
    connections = open_connections(settings, urls)
    try:
        if apply_migrations:
            await _migrated(connections, urls)
        yield connections
    finally:
        await connections.close()


class UnreachableStoreError(Exception):
    """A store the process cannot start without did not answer."""


async def _migrated(connections: Connections, urls: StoreUrls) -> None:
    try:
        await migrate.upgrade(connections.engine, connections.documents)
    except Exception as error:
        message = not_answering(error, connections.engine.dialect.name, urls)
        if message is None:
            raise
        # Raised from nothing: the server's start-up prints the traceback of what stopped
        # it, and the driver's frames would bury the one line that says why.
        raise UnreachableStoreError(f"cannot apply migrations: {message}") from None


async def refresh_counter_snapshots(
    connections: Connections, interval: float, stop: asyncio.Event, cache: ResponseCache | None
) -> None:
    """Copy counters to PostgreSQL every ``interval`` seconds, by one process of the cluster
    per period, until ``stop`` is set; a failing store skips a period. Lists ordered by
    views follow each copy at once."""
    while not await set_within(stop, interval):
        try:
            if await take_turn(redis=connections.redis, name="counter-snapshot", seconds=interval):
                await snapshot_counters(redis=connections.redis, engine=connections.engine)
                if cache is not None:
                    await cache.invalidate([SNAPSHOT_TAG])
        except SNAPSHOT_FAILURES as error:
            logger.warning("counter snapshot skipped: %s", error)


async def snapshot_counters_now(connections: Connections, within: float) -> None:
    """Copy the counters once, at shutdown, within ``within`` seconds: a hung store delays
    the exit no longer, and a failing one only costs a log line. Cutting the copy off
    half-way loses nothing: the process is exiting, and its transaction rolls back."""
    try:
        async with asyncio.timeout(within):
            await snapshot_counters(redis=connections.redis, engine=connections.engine)
    except SNAPSHOT_FAILURES as error:
        logger.warning("counter snapshot at shutdown skipped: %r", error)


async def reconcile_stores(connections: Connections, stop: asyncio.Event) -> None:
    """Remove documents whose report never committed, and complete the others."""
    try:
        completed, removed = await reconcile_documents(
            engine=connections.engine, documents=connections.documents, stop=stop
        )
    except (PyMongoError, DBAPIError, OSError) as error:
        logger.warning("reconciliation skipped: %s", error)
        return
    if completed or removed:
        logger.warning(
            "reconciliation: %d interrupted writes completed, %d orphan documents removed",
            completed,
            removed,
        )
