"""Real stores for the tests: embedded servers started once, or external ones from
``GATEWAY_TEST_DATABASE_URL`` / ``GATEWAY_TEST_MONGO_URL`` / ``GATEWAY_TEST_REDIS_URL``.

Every test gets a database of its own in the relational store (a copy of a migrated
template) and in MongoDB, each emptied by the test before it if not new (tests/databases.py,
tests/document_databases.py), and an emptied Redis database, so tests never see each other's
data. Workers of a parallel run (pytest-xdist) have templates of their own, and three Redis
databases each: the n-th worker (from 0) flushes databases 3n to 3n + 2 of the server it is
given, and 0 to 2 of its own embedded one.
"""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import coverage
import httpx
import pytest
import uvloop
from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from sqlalchemy import make_url

from core.connections import Connections, open_connections, redis_pool
from core.settings import Settings
from core.store_urls import StoreUrls
from datasources import document_migrations
from datasources.dialects import relational_engine
from datasources.models import Role
from gateway import migrate
from gateway.app import create_app
from gateway.embedded import EmbeddedStores
from gateway.embedded.postgres import remove_shared_clusters
from gateway.seed import seed
from tests.clients import Caller, Seeded, issue_key, lifespan_client
from tests.databases import Databases, databases_at, fresh_name
from tests.document_databases import DocumentDatabases
from tests.factories import make_catalogue
from tests.given_stores import GIVEN_STORES, stores_given
from tests.ports import WORKER_INDEX
from tests.processes import store_environment

# The event loop that serves: uvicorn runs the gateway on uvloop, so the tests do too. On
# asyncio's own loop a connection refused said where, and on uvloop it does not: the
# gateway's messages relied on it, and only a run on uvloop showed it. The tests' processor
# time is also some 8% less on it.
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

TEMPLATE_DATABASE = f"gateway_test_template_gw{WORKER_INDEX}"
# The worker's Redis databases: one flushed for every test, one for each shared catalogue.
# A Redis server has 16: a given one, which every worker shares, has room for five workers'
# three; each worker's own embedded one, for any number of workers.
TEST_REDIS_DATABASE = 3 * WORKER_INDEX if os.environ.get("GATEWAY_TEST_REDIS_URL") else 0
SEEDED_REDIS_DATABASE = TEST_REDIS_DATABASE + 1
REFUSALS_REDIS_DATABASE = TEST_REDIS_DATABASE + 2
# What a client's connection is on uvloop, over TCP or a Unix socket (TLS runs over these);
# uvloop's type stubs leave its transports out.
OPEN_ON_THE_LOOP = (uvloop.loop.TCPTransport, uvloop.loop.UnixTransport)  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    """Freeze what the imports made and turn the collector back on (tests/__init__.py),
    once the tests are collected, or once a parallel run's controller has left collecting
    to its workers."""
    try:
        return (yield)
    finally:
        gc.freeze()
        gc.enable()


# Inside pytest-cov's own wrapper: when it has paused its measurement and not yet resumed
# it. Outside it, this started pytest-cov's measurement a second time after each such test,
# and the one start left over at the end measured the process's shutdown.
@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """A test marked ``no_cover`` runs with no coverage measured at all. pytest-cov's own
    pause stops only its measurement: in a parallel run's processes, another has begun,
    which then measures the test in its place."""
    if item.get_closest_marker("no_cover") is None:
        return (yield)
    stopped = []
    while (measuring := coverage.Coverage.current()) is not None:
        measuring.stop()
        stopped.append(measuring)
    try:
        return (yield)
    finally:
        for measurement in reversed(stopped):
            measurement.start()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A run given stores of its own runs the tests those stores reach, and only those.

    Given stores reach a test only through ``store_urls``. Any other test starts servers
    of its own (``gateway serve`` processes, ``EmbeddedStores``) or needs none, and runs
    the same whichever stores a run is given: the default run, on the embedded servers,
    covers it. Continuous integration runs the suite again for each relational backend,
    and these tests were about half of each such run's time. So does a test marked
    ``servers_of_its_own``: it uses the given stores, but what it tests is servers it
    starts itself. And so does a test in a browser: what it tests is what the pages do,
    and the answers of the stores behind them are those the API's tests check on every
    backend, and the browser tests cost each such run some 15 CPU-seconds (Chromium's
    processes included), about a tenth of its CPU.
    """
    if not stores_given():
        return
    reached = [
        item
        for item in items
        if "store_urls" in (fixtures := getattr(item, "fixturenames", ()))
        and "browser" not in fixtures
        and item.get_closest_marker("servers_of_its_own") is None
    ]
    if len(reached) < len(items):
        kept = set(reached)
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = reached


def pytest_report_header(config: pytest.Config) -> str | None:
    given = [name for name in GIVEN_STORES if os.environ.get(name)]
    if not given:
        return None
    return (
        f"stores given by {', '.join(given)}: only the tests they reach run; those that "
        "start servers of their own or need none are deselected (the default run has them)"
    )


@pytest.fixture(autouse=True)
def cycles_collected() -> Iterator[None]:
    """Collect what a test left in cycles, as its last teardown: a connection it left
    unclosed is then found during the test's own teardown, and fails it. Left to the
    collector, which the gateway's start-up makes run rarely (gateway/collector.py), it
    failed whichever later test a full pass happened to run in."""
    yield
    gc.collect()


@pytest.fixture(scope="session", autouse=True)
async def connections_closed_by_the_end() -> AsyncIterator[None]:
    """Fail the session, naming them, if connections are still open on its event loop once
    every other session fixture is done, and close them.

    uvloop closes what is left open when the loop closes, but first warns about each one,
    and the tests make warnings errors: the warning then stops it from closing that
    connection, and a connection still waiting to read keeps the loop's close waiting for
    ever, with the process idle and no test to time out. The clients of a shared catalogue
    whose setup failed did so."""
    yield
    left_open = [
        transport
        for transport in gc.get_objects()
        if isinstance(transport, OPEN_ON_THE_LOOP) and not transport.is_closing()
    ]
    peers = [transport.get_extra_info("peername") for transport in left_open]
    for transport in left_open:
        transport.close()
    assert not left_open, f"connections left open at the end of the session, to {peers}"


@pytest.fixture(scope="session", autouse=True)
def shared_clusters_removed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Remove, once the process's tests are done, the PostgreSQL clusters that the embedded
    servers of its data directories kept in the shared place (gateway/embedded/postgres.py).

    As root, a data directory under pytest's temporary directory, which only root may
    enter, keeps its cluster there, some 50 MB, until a later gateway finds the data
    directory gone: pytest keeps the temporary directories of the last runs, so a few runs
    left gigabytes. The data directories stay, with their logs."""
    yield
    mine = tmp_path_factory.getbasetemp().resolve()
    remove_shared_clusters(lambda _, data_dir: data_dir.is_relative_to(mine))


@pytest.fixture(scope="session")
def store_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreUrls]:
    wanted = StoreUrls(
        database_url=os.environ.get("GATEWAY_TEST_DATABASE_URL"),
        mongo_url=os.environ.get("GATEWAY_TEST_MONGO_URL"),
        redis_url=os.environ.get("GATEWAY_TEST_REDIS_URL"),
    )
    with EmbeddedStores(tmp_path_factory.mktemp("stores"), wanted) as embedded:
        yield embedded.start()


@pytest.fixture(scope="session")
async def databases(store_urls: StoreUrls) -> AsyncIterator[Databases]:
    assert store_urls.database_url is not None
    made = databases_at(store_urls.database_url)
    yield made
    await made.close()


@pytest.fixture(scope="session")
async def template_database(databases: Databases, store_urls: StoreUrls) -> str:
    """A database migrated to head, copied by every test that wants a fresh one."""
    await databases.create(TEMPLATE_DATABASE, None)
    engine = relational_engine(databases.url(TEMPLATE_DATABASE), timeout=30)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(store_urls.mongo_url)
    scratch = f"template_{uuid.uuid4().hex[:8]}"
    try:
        await migrate.upgrade(engine, mongo[scratch])
    finally:
        await mongo.drop_database(scratch)
        await mongo.close()
        await engine.dispose()
    return TEMPLATE_DATABASE


@pytest.fixture
async def database_url(databases: Databases, template_database: str) -> AsyncIterator[str]:
    """A database of this test's own, with the schema at head."""
    name = await databases.copy(template_database)
    yield databases.url(name)
    await databases.done_with(name, template_database)


@pytest.fixture
async def empty_database_url(databases: Databases) -> AsyncIterator[str]:
    """A database of this test's own with nothing in it, not even the schema."""
    name = fresh_name()
    await databases.create(name, None)
    yield databases.url(name)
    await databases.drop(name)


@pytest.fixture(scope="session")
async def document_databases(store_urls: StoreUrls) -> AsyncIterator[DocumentDatabases]:
    assert store_urls.mongo_url is not None
    made = DocumentDatabases(store_urls.mongo_url)
    yield made
    await made.close()


@pytest.fixture
async def mongo_database(document_databases: DocumentDatabases) -> AsyncIterator[str]:
    """A MongoDB database of this test's own: empty, or migrated with no documents."""
    name = document_databases.take()
    yield name
    await document_databases.done_with(name)


@pytest.fixture
async def redis_url(store_urls: StoreUrls) -> str:
    assert store_urls.redis_url is not None
    url = (
        make_url(store_urls.redis_url)
        .set(database=str(TEST_REDIS_DATABASE))
        .render_as_string(hide_password=False)
    )
    client = Redis.from_pool(redis_pool(url, timeout=30, traced=False))
    await client.flushdb()
    await client.aclose()
    return url


@pytest.fixture
def settings(
    database_url: str, mongo_database: str, redis_url: str, store_urls: StoreUrls, tmp_path: Path
) -> Settings:
    return Settings(
        database_url=database_url,
        mongo_url=store_urls.mongo_url,
        mongo_database=mongo_database,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
    )


@pytest.fixture
def configured(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``settings`` in the environment, where the command line reads them."""
    for name, value in store_environment(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GATEWAY_LOG_LEVEL", "warning")
    return settings


@pytest.fixture
async def connections(settings: Settings) -> AsyncIterator[Connections]:
    opened = open_connections(
        settings,
        StoreUrls(settings.database_url, settings.mongo_url, settings.redis_url),
    )
    await document_migrations.upgrade(opened.documents)
    yield opened
    await opened.close()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan_client(create_app(settings)) as http:
        yield http


SEEDED_REPORTS = 400


@asynccontextmanager
async def shared_stores(
    store_urls: StoreUrls, databases: Databases, template: str, redis_database: int, data_dir: Path
) -> AsyncIterator[tuple[Settings, Connections]]:
    """Stores of their own for the tests of a whole session: a database copied from
    ``template``, a MongoDB database and Redis database ``redis_database``, emptied. Their
    gateway copies no counters on its own: a copy rewrites every snapshot's time, and the
    tests compare the stores before and after what they send."""
    name = fresh_name()
    await databases.create(name, template)
    assert store_urls.redis_url is not None
    settings = Settings(
        database_url=databases.url(name),
        mongo_url=store_urls.mongo_url,
        mongo_database=f"shared_{uuid.uuid4().hex[:8]}",
        redis_url=str(make_url(store_urls.redis_url).set(database=str(redis_database))),
        data_dir=data_dir,
        counter_snapshot_interval=0,
    )
    connections = open_connections(
        settings, StoreUrls(settings.database_url, settings.mongo_url, settings.redis_url)
    )
    # Closed whatever fails: a MongoDB client left open keeps uvloop from closing the loop.
    try:
        await document_migrations.upgrade(connections.documents)
        await connections.redis.flushdb()
        try:
            yield settings, connections
        finally:
            await connections.mongo.drop_database(settings.mongo_database)
            await connections.redis.flushdb()
    finally:
        await connections.close()
        await databases.drop(name)


@pytest.fixture(scope="session")
async def seeded(
    store_urls: StoreUrls,
    databases: Databases,
    template_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Seeded]:
    """The demo catalogue, for tests that only read: the planner's and the read API's."""
    async with shared_stores(
        store_urls, databases, template_database, SEEDED_REDIS_DATABASE,
        tmp_path_factory.mktemp("seeded"),
    ) as (settings, connections):  # fmt: skip
        await seed(connections, reports=SEEDED_REPORTS, random_seed=11, progress=False)
        async with lifespan_client(create_app(settings)) as http:
            yield Seeded(settings=settings, connections=connections, client=http)


@pytest.fixture(scope="session")
async def refusals(
    store_urls: StoreUrls,
    databases: Databases,
    template_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Caller]:
    """A gateway on a small catalogue (tests/factories.py), with a key of every role, for
    the tests of requests it refuses: they share it, so each checks that it changed
    nothing."""
    async with shared_stores(
        store_urls, databases, template_database, REFUSALS_REDIS_DATABASE,
        tmp_path_factory.mktemp("refusals"),
    ) as (settings, connections):  # fmt: skip
        await make_catalogue(connections)
        keys = {role.value: (await issue_key(connections, settings, role)).key for role in Role}
        async with lifespan_client(create_app(settings)) as http:
            yield Caller(http, keys, connections)


@pytest.fixture
async def call(settings: Settings, connections: Connections) -> AsyncIterator[Caller]:
    """A gateway on a small catalogue of this test's own (tests/factories.py), with a key
    of every role."""
    await make_catalogue(connections)
    keys = {role.value: (await issue_key(connections, settings, role)).key for role in Role}
    async with lifespan_client(create_app(settings)) as client:
        yield Caller(client, keys, connections)
