"""Ways for a test to talk to a gateway: in process through its ASGI interface, or over a
real socket (HTTP, or a WebSocket that speaks graphql-transport-ws), as a role, and to
the stores behind it."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from sqlalchemy import BindParameter, bindparam, select, text
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from core.connections import Connections
from core.settings import Settings
from datasources import api_keys
from datasources.document_migrations import REPORT_DOCUMENTS
from datasources.models import Base, Role
from tests.ports import own_port

TRANSPORT = Subprotocol("graphql-transport-ws")
LEGACY = Subprotocol("graphql-ws")
# Generous: a WebSocket's client waits for something to happen, it does not time it.
WAIT = 20.0


@asynccontextmanager
async def lifespan_client(application: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``application``, with its lifespan (and so its stores) running."""
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http


def loopback_server(application: Starlette, port: int) -> uvicorn.Server:
    """A uvicorn server for ``application`` on loopback ``port``, not yet started."""
    return uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning")
    )


@asynccontextmanager
async def serving(application: Starlette) -> AsyncIterator[str]:
    """``application`` served by uvicorn on a free loopback port; yields its host:port."""
    server = loopback_server(application, own_port())
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
                await asyncio.sleep(0.01)
        yield f"127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        await task


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


class Caller:
    """A gateway's GraphQL endpoint, called as a role, and the stores behind it."""

    def __init__(
        self, client: httpx.AsyncClient, keys: dict[str, str], connections: Connections
    ) -> None:
        self.client = client
        self.keys = keys
        self.connections = connections

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


def unavailable(body: dict[str, Any]) -> bool:
    """Whether ``body`` is the answer of a request that a store could not serve: if it
    carries errors, each must say so."""
    if "errors" not in body:
        return False
    codes = {error["extensions"]["code"] for error in body["errors"]}
    assert codes == {"SERVICE_UNAVAILABLE"}, body
    return True


async def footprint(connections: Connections) -> str:
    """A digest of every row and every report document: equal before and after a request
    that wrote nothing."""
    digest = hashlib.sha256()
    async with connections.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = await connection.execute(select(table).order_by(*table.primary_key.columns))
            digest.update(repr([tuple(row) for row in rows]).encode())
    documents = connections.documents[REPORT_DOCUMENTS].find().sort("_id")
    digest.update(repr([document async for document in documents]).encode())
    return digest.hexdigest()


class Socket:
    """A graphql-transport-ws client, as thin as the protocol."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket

    async def send(self, message: dict[str, Any]) -> None:
        await self.socket.send(json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                message: dict[str, Any] = json.loads(await self.socket.recv())
                if message["type"] not in ("ping", "pong", "ka"):
                    return message

    async def subscribe(self, id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        await self.send(
            {
                "id": id,
                "type": "subscribe",
                "payload": {"query": query, "variables": variables or {}},
            }
        )

    async def until(self, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first message ``check`` accepts, skipping those before it."""
        while True:
            message = await self.receive()
            if check(message):
                return message

    async def closed_with(self) -> int | None:
        async with asyncio.timeout(WAIT):
            try:
                while True:
                    await self.socket.recv()
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None


@asynccontextmanager
async def websocket(
    address: str,
    *,
    protocol: Subprotocol = TRANSPORT,
    init: dict[str, Any] | None = None,
    acknowledged: bool = True,
) -> AsyncIterator[Socket]:
    async with connect(f"ws://{address}/graphql", subprotocols=[protocol]) as raw:
        socket = Socket(raw)
        if init is not None:
            await socket.send({"type": "connection_init", "payload": init})
            if acknowledged:
                assert (await socket.receive())["type"] == "connection_ack"
        yield socket
