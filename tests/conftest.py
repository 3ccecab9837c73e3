"""Real stores for the tests: embedded servers started once, or external ones from
``GATEWAY_TEST_DATABASE_URL`` / ``GATEWAY_TEST_MONGO_URL`` / ``GATEWAY_TEST_REDIS_URL``.

Every test gets a database of its own in PostgreSQL (cloned from a migrated template) and
in MongoDB, and an emptied Redis database, so tests never see each other's data. The
suite flushes the Redis database it is given.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from sqlalchemy import BindParameter, bindparam, make_url, text
from starlette.applications import Starlette

from core.connections import Connections, StoreUrls, open_connections
from core.settings import Settings
from datasources import api_keys, document_migrations
from datasources.dialects import relational_engine
from datasources.models import Role
from gateway import migrate
from gateway.app import create_app
from gateway.embedded import EmbeddedStores
from gateway.embedded.process import free_port
from gateway.seed import seed
from tests.databases import Databases, databases_at, fresh_name
from tests.processes import store_environment

TEMPLATE_DATABASE = "gateway_test_template"


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
def databases(store_urls: StoreUrls) -> Databases:
    assert store_urls.database_url is not None
    return databases_at(store_urls.database_url)


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
    name = fresh_name()
    await databases.create(name, template_database)
    yield databases.url(name)
    await databases.drop(name)


@pytest.fixture
async def empty_database_url(databases: Databases) -> AsyncIterator[str]:
    """A database of this test's own with nothing in it, not even the schema."""
    name = fresh_name()
    await databases.create(name, None)
    yield databases.url(name)
    await databases.drop(name)


@pytest.fixture
async def mongo_database(store_urls: StoreUrls) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(store_urls.mongo_url)
    await client.drop_database(name)
    await client.close()


@pytest.fixture
async def redis_url(store_urls: StoreUrls) -> str:
    assert store_urls.redis_url is not None
    client = Redis.from_url(store_urls.redis_url)
    await client.flushdb()
    await client.aclose()
    return store_urls.redis_url


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


@asynccontextmanager
async def lifespan_client(application: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``application``, with its lifespan (and so its stores) running."""
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan_client(create_app(settings)) as http:
        yield http


SEEDED_REPORTS = 400


@dataclass(frozen=True)
class Seeded:
    """A catalogue seeded once per test session, for tests that only read."""

    settings: Settings
    connections: Connections
    client: httpx.AsyncClient

    async def query(
        self, document: str, variables: dict[str, Any] | None = None, **headers: str
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/graphql", json={"query": document, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def data(self, document: str, variables: dict[str, Any] | None = None) -> Any:
        result = await self.query(document, variables)
        assert "errors" not in result, result["errors"]
        return result["data"]

    async def sql(self, statement: str, **parameters: Any) -> list[Any]:
        """Rows of ``statement``; a list parameter is a list of values (``id IN :ids``)."""
        lists: list[BindParameter[Any]] = [
            bindparam(name, expanding=True)
            for name, value in parameters.items()
            if isinstance(value, list)
        ]
        async with self.connections.engine.connect() as connection:
            query = text(statement).bindparams(*lists)
            return list((await connection.execute(query, parameters)).all())


@pytest.fixture(scope="session")
async def seeded(
    store_urls: StoreUrls,
    databases: Databases,
    template_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Seeded]:
    name = fresh_name()
    await databases.create(name, template_database)
    assert store_urls.redis_url is not None
    settings = Settings(
        database_url=databases.url(name),
        mongo_url=store_urls.mongo_url,
        mongo_database=f"seeded_{uuid.uuid4().hex[:8]}",
        # Its own Redis database: the per-test fixture flushes database 0.
        redis_url=str(make_url(store_urls.redis_url).set(database="1")),
        data_dir=tmp_path_factory.mktemp("seeded"),
    )
    connections = open_connections(
        settings, StoreUrls(settings.database_url, settings.mongo_url, settings.redis_url)
    )
    await document_migrations.upgrade(connections.documents)
    await connections.redis.flushdb()
    await seed(connections, reports=SEEDED_REPORTS, random_seed=11, progress=False)
    async with lifespan_client(create_app(settings)) as http:
        yield Seeded(settings=settings, connections=connections, client=http)
    await connections.mongo.drop_database(settings.mongo_database)
    await connections.redis.flushdb()
    await connections.close()
    await databases.drop(name)


class Caller:
    def __init__(self, client: httpx.AsyncClient, keys: dict[str, str]) -> None:
        self.client = client
        self.keys = keys

    async def __call__(
        self, document: str, variables: dict[str, Any] | None = None, role: str = "editor"
    ) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self.keys[role]}"} if role in self.keys else {}
        response = await self.client.post(
            "/graphql", json={"query": document, "variables": variables or {}}, headers=headers
        )
        body: dict[str, Any] = response.json()
        assert response.status_code == 200, body
        assert "errors" not in body, body["errors"]
        data: dict[str, Any] = body["data"]
        return data


async def issue_key(
    connections: Connections, settings: Settings, role: Role, name: str = "test"
) -> api_keys.IssuedKey:
    return await api_keys.create_key(
        engine=connections.engine,
        secret=settings.secret_key.get_secret_value(),
        name=name,
        role=role,
    )


@pytest.fixture
async def call(settings: Settings, connections: Connections) -> AsyncIterator[Caller]:
    await seed(connections, reports=20, progress=False)
    keys = {role.value: (await issue_key(connections, settings, role)).key for role in Role}
    async with lifespan_client(create_app(settings)) as client:
        yield Caller(client, keys)


class HeldStoreCall:
    """A store call injected in place of a real one: it starts, then answers ``value``
    when ``release`` is set; ``events`` says what it did."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.events: list[str] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, **_: Any) -> Any:
        self.events.append("started")
        self.started.set()
        await self.release.wait()
        self.events.append("finished")
        return self.value


@contextmanager
def own_redis(settings: Settings, directory: Path) -> Iterator[tuple[Settings, EmbeddedStores]]:
    """``settings`` with a Redis server of their own, which the caller may stop."""
    wanted = StoreUrls(settings.database_url, settings.mongo_url, None)
    with EmbeddedStores(directory, wanted) as own:
        urls = own.start()
        yield settings.model_copy(update={"redis_url": urls.redis_url, "store_timeout": 1.0}), own


@asynccontextmanager
async def serving(application: Starlette) -> AsyncIterator[str]:
    """``application`` served by uvicorn on a free loopback port; yields its host:port."""
    server = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
                await asyncio.sleep(0.01)
        yield f"127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        await task
