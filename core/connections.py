"""The clients of the three stores: created once per process, closed once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, parse_url
from redis.asyncio.sentinel import Sentinel
from redis.driver_info import DriverInfo
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)

from core import SERVICE_NAME, __version__
from core.pools import MongoPool, TimedConnectionPool, TimedQueuePool, TimedSentinelPool
from core.settings import Settings
from core.store_urls import StoreUrls, sentinel_url
from core.stores import Circuits, StoreCalls
from datasources.dialects import backend_of, relational_engine
from datasources.explain import CommandRecorder, record_statements
from datasources.instrumentation import (
    CountingSentinelConnection,
    MongoCommandCounter,
    NotingSentinelConnection,
    count_postgres_statements,
    counted_connection,
    note_commands,
)

POSTGRES_POOL_SIZE = 20
REDIS_MAX_CONNECTIONS = 64
# What each connection tells Redis it is (CLIENT LIST shows it), made once: left to the
# driver, every new connection looked its version up in the installed packages' metadata,
# a scan of the import path that was a third of the processor time a connection cost.
REDIS_CLIENT = DriverInfo().add_upstream_driver(SERVICE_NAME, __version__)


@dataclass(frozen=True)
class Connections:
    engine: AsyncEngine
    # For reads of one statement, with the fewest round trips around each that its
    # backend allows: on PostgreSQL the same pool, with no BEGIN and ROLLBACK; on MySQL
    # and SQLite a pool of its own (datasources/mysql_dialect.py, sqlite_dialect.py).
    reader: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    mongo: AsyncMongoClient[dict[str, Any]]
    documents: AsyncDatabase[dict[str, Any]]
    redis: Redis
    # Every store call, which may outlive the request that made it (see core/stores.py).
    calls: StoreCalls
    # Each store's circuit (see core/stores.py), shared by every request of the process.
    circuits: Circuits
    # The relational engines with a pool of their own: ``engine``, and ``reader`` where it
    # does not share ``engine``'s.
    pooled_engines: tuple[AsyncEngine, ...]
    # What MongoDB's pool has checked out (the metrics read the others' pools themselves).
    mongo_pool: MongoPool = field(default_factory=MongoPool)

    @property
    def relational_pools(self) -> list[TimedQueuePool]:
        pools = []
        for engine in self.pooled_engines:
            assert isinstance(engine.pool, TimedQueuePool)
            pools.append(engine.pool)
        return pools

    async def close(self) -> None:
        await self.calls.end()
        for engine in self.pooled_engines:
            await engine.dispose()
        await self.mongo.close()
        await self.redis.aclose()


def open_connections(settings: Settings, urls: StoreUrls) -> Connections:
    """Create the clients; none of them connects until first used."""
    if urls.database_url is None or urls.mongo_url is None or urls.redis_url is None:
        raise ValueError(f"every store needs a URL, got {urls}")
    timeout = settings.store_timeout
    database_url = urls.database_url

    def pooled_engine(**options: Any) -> AsyncEngine:
        defaults: dict[str, Any] = {
            "pool_size": POSTGRES_POOL_SIZE,
            # No connections beyond the pool: under load they were opened and closed again
            # for a statement each, a server process started and stopped every time. A
            # statement waits for a pooled connection instead (up to the pool timeout).
            "max_overflow": 0,
            # No ping at each checkout, a round trip per statement: a connection that a
            # restart broke fails its statement as the store being unavailable, and is
            # dropped.
            "pool_pre_ping": False,
            "pool_timeout": timeout,
            "poolclass": TimedQueuePool,
        }
        return relational_engine(database_url, timeout=timeout, **(defaults | options))

    engine = pooled_engine()
    reader = backend_of(engine).reader(engine, pooled_engine)
    # An engine with options of its own shares its pool, and its events, with the engine
    # it came from: only one with a pool of its own needs listening to and disposing of.
    pooled = (engine,) if reader.pool is engine.pool else (engine, reader)
    for each in pooled:
        count_postgres_statements(each)
        record_statements(each)
    # Traced store calls carry their statements and commands (see core/telemetry.py).
    traced = settings.otlp_endpoint is not None
    noters = note_commands(*pooled) if traced else []
    mongo_pool = MongoPool()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        urls.mongo_url,
        serverSelectionTimeoutMS=int(timeout * 1000),
        connectTimeoutMS=int(timeout * 1000),
        timeoutMS=int(timeout * 1000),
        tz_aware=True,
        event_listeners=[MongoCommandCounter(), CommandRecorder(), mongo_pool, *noters],
    )
    # from_pool: the client owns the pool, so closing the client disconnects it.
    redis = Redis.from_pool(redis_pool(urls.redis_url, timeout=timeout, traced=traced))
    calls = StoreCalls(timeout)
    return Connections(
        engine=engine,
        reader=reader,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        mongo=mongo,
        documents=mongo[settings.mongo_database],
        redis=redis,
        calls=calls,
        circuits=Circuits(calls),
        pooled_engines=pooled,
        mongo_pool=mongo_pool,
    )


def redis_pool(url: str, *, timeout: float, traced: bool) -> TimedConnectionPool:
    """The pool of the client of the Redis server at ``url``, or of the master that the
    sentinels of a ``redis+sentinel://`` URL name.

    A blocking pool: at its limit, a call waits for a free connection (up to the store
    timeout) instead of failing at once with "too many connections"."""
    options: dict[str, Any] = {
        "max_connections": REDIS_MAX_CONNECTIONS,
        "timeout": timeout,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
        "driver_info": REDIS_CLIENT,
    }
    sentinels = sentinel_url(url)
    if sentinels is None:
        # Not from_url: its URL's scheme would choose a connection class that counts nothing.
        options.update(parse_url(url))
        options["connection_class"] = counted_connection(
            options.get("connection_class", Connection), noted=traced
        )
        return TimedConnectionPool(**options)
    manager = Sentinel(  # type: ignore[no-untyped-call]
        sentinels.sentinels,
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "username": sentinels.sentinel_username,
            "password": sentinels.sentinel_password,
            "driver_info": REDIS_CLIENT,
        },
    )
    return TimedSentinelPool(
        service_name=sentinels.service,
        sentinel_manager=manager,
        connection_class=NotingSentinelConnection if traced else CountingSentinelConnection,
        db=sentinels.db,
        username=sentinels.username,
        password=sentinels.password,
        **options,
    )
