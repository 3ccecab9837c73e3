"""A gateway given a PostgreSQL primary and its standby in one URL, through a switchover: the
primary stopped, the standby promoted. Real servers: a primary of the embedded binaries and
a streaming standby made from its base backup."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.connections import open_connections
from core.settings import Settings
from core.store_urls import StoreUrls
from datasources.models import Role
from gateway import migrate
from gateway.app import create_app
from gateway.embedded.postgres import SUPERUSER, PostgresServer
from gateway.embedded.process import LOOPBACK
from tests.clients import issue_key, lifespan_client, unavailable
from tests.databases import several_hosts
from tests.factories import make_catalogue
from tests.waiting import eventually

# The PostgreSQL servers are the test's own: a run given stores adds nothing to it.
pytestmark = pytest.mark.servers_of_its_own

NAMES = "{ institutions(first: 50) { edges { node { name } } } }"


class Standby(PostgresServer):
    """A hot standby of ``primary``, streaming its changes as they are made."""

    def __init__(self, data_dir: Path, primary: PostgresServer) -> None:
        super().__init__(data_dir)
        self.primary = primary

    def make_cluster(self) -> None:
        assert self.primary.port is not None
        # --write-recovery-conf: the standby's settings to follow the primary.
        self._run(
            "pg_basebackup",
            "--pgdata", str(self.cluster_dir),
            "--host", LOOPBACK,
            "--port", str(self.primary.port),
            "--username", SUPERUSER,
            "--write-recovery-conf",
            "--checkpoint", "fast",
        )  # fmt: skip

    def promote(self) -> None:
        self._run("pg_ctl", "promote", "--pgdata", str(self.cluster_dir), "--wait")


@dataclass(frozen=True)
class Pair:
    primary: PostgresServer
    standby: Standby

    def url(self) -> str:
        """Both servers, the primary first."""
        assert self.primary.port is not None
        assert self.standby.port is not None
        return several_hosts(
            self.primary.url(self.primary.port),
            [f"{LOOPBACK}:{self.primary.port}", f"{LOOPBACK}:{self.standby.port}"],
        )


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    primary = PostgresServer(tmp_path / "primary")
    standby = Standby(tmp_path / "standby", primary)
    try:
        primary.start()
        standby.start()
        yield Pair(primary, standby)
    finally:
        standby.stop()
        primary.stop()


@dataclass(frozen=True)
class Served:
    client: httpx.AsyncClient
    editor: str

    async def create(self, name: str) -> dict[str, Any]:
        return await self._answer(
            f'mutation {{ createInstitution(input: {{name: "{name}"}}) {{ __typename }} }}',
            {"authorization": f"Bearer {self.editor}"},
        )

    async def read(self) -> dict[str, Any]:
        return await self._answer(NAMES, {})

    async def _answer(self, document: str, headers: dict[str, str]) -> dict[str, Any]:
        response = await self.client.post("/graphql", json={"query": document}, headers=headers)
        assert response.status_code != 500, response.text
        body: dict[str, Any] = response.json()
        return body

    async def names(self) -> set[str]:
        edges = (await self.read())["data"]["institutions"]["edges"]
        return {edge["node"]["name"] for edge in edges}


@pytest.fixture
async def gateway(
    pair: Pair, store_urls: StoreUrls, mongo_database: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[Served]:
    settings = Settings(
        database_url=pair.url(),
        mongo_url=store_urls.mongo_url,
        mongo_database=mongo_database,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
    )
    connections = open_connections(
        settings, StoreUrls(settings.database_url, settings.mongo_url, settings.redis_url)
    )
    try:
        await migrate.upgrade(connections.engine, connections.documents)
        await make_catalogue(connections)
        editor = (await issue_key(connections, settings, Role.EDITOR)).key
    finally:
        await connections.close()
    async with lifespan_client(create_app(settings)) as client:
        yield Served(client, editor)


async def test_writes_follow_the_standby_promoted_after_the_primary_stops(
    pair: Pair, gateway: Served
) -> None:
    assert (await gateway.create("Before"))["data"] == {
        "createInstitution": {"__typename": "InstitutionSaved"}
    }

    # A switchover's first step: the primary stops, after it has sent the standby all it
    # wrote. The standby takes no writes, and the gateway reads where it writes, so nothing
    # is served until the standby is promoted.
    pair.primary.stop()
    assert unavailable(await gateway.create("Meanwhile"))
    assert unavailable(await gateway.read())

    pair.standby.promote()

    async def written() -> bool:
        return not unavailable(await gateway.create("After"))

    await eventually(written)
    names = await gateway.names()
    assert {"Before", "After"} <= names
    assert "Meanwhile" not in names
