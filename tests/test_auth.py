"""Bearer API keys and JWTs, roles, field-level access and WebSocket authentication."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from sqlalchemy import text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from core.connections import Connections
from core.settings import Settings
from datasources import api_keys
from datasources.models import Role
from gateway import cli
from gateway.app import create_app
from tests.clients import issue_key, lifespan_client, serving
from tests.waiting import eventually

SECRET = "a-test-secret-that-is-long-enough-for-hs256-and-for-hs512-as-well-0123"
AUTHOR_EMAILS = "{ authors(first: 2) { edges { node { name email } } } }"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def auth_settings(settings: Settings, tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Settings:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    return settings.model_copy(
        update={"jwt_secret": SecretStr(SECRET), "jwks_file": jwks, "jwt_audience": "gateway"}
    )


@pytest.fixture
async def auth_client(
    auth_settings: Settings, connections: Connections
) -> AsyncIterator[httpx.AsyncClient]:
    async with connections.engine.begin() as connection:
        await connection.execute(text("INSERT INTO institutions (id, name) VALUES (1, 'Lab')"))
        await connection.execute(
            text(
                "INSERT INTO authors (id, first_name, last_name, email, institution_id)"
                " VALUES (1, '', 'Ada', 'ada@lab.example', 1)"
            )
        )
    async with lifespan_client(create_app(auth_settings)) as client:
        yield client


def _token(
    claims: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256", **header: Any
) -> str:
    base = {"sub": "user-1", "aud": "gateway", "exp": int(time.time()) + 300}
    return jwt.encode(base | claims, key, algorithm=algorithm, headers=header or None)


async def _emails(client: httpx.AsyncClient, authorization: str | None = None) -> httpx.Response:
    headers = {"authorization": authorization} if authorization else {}
    return await client.post("/graphql", json={"query": AUTHOR_EMAILS}, headers=headers)


async def test_anonymous_reads_public_fields_but_not_emails(auth_client: httpx.AsyncClient) -> None:
    body = (await _emails(auth_client)).json()
    assert body["data"]["authors"]["edges"][0]["node"] == {"name": "Ada", "email": None}
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["path"] == ["authors", "edges", 0, "node", "email"]


@pytest.mark.parametrize("role", ["reader", "editor", "admin"])
async def test_every_role_from_an_api_key_reads_emails(
    auth_client: httpx.AsyncClient, auth_settings: Settings, connections: Connections, role: str
) -> None:
    issued = await issue_key(connections, auth_settings, Role(role), "t")
    body = (await _emails(auth_client, f"Bearer {issued.key}")).json()
    assert "errors" not in body
    assert body["data"]["authors"]["edges"][0]["node"]["email"] == "ada@lab.example"


async def test_a_revoked_key_is_unauthenticated(
    auth_client: httpx.AsyncClient, auth_settings: Settings, connections: Connections
) -> None:
    issued = await issue_key(connections, auth_settings, Role.READER, "t")
    assert (await _emails(auth_client, f"Bearer {issued.key}")).status_code == 200
    secret = auth_settings.secret_key.get_secret_value()
    revoked = await api_keys.revoke_key(
        engine=connections.engine, secret=secret, key_or_id=str(issued.id)
    )
    assert revoked == 1
    await api_keys.announce_revocation(redis=connections.redis)

    async def refused() -> bool:
        return (await _emails(auth_client, f"Bearer {issued.key}")).status_code == 401

    await eventually(refused)
    response = await _emails(auth_client, f"Bearer {issued.key}")
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_key_revoked_while_it_was_read_is_read_again_next_time(
    auth_client: httpx.AsyncClient,
    auth_settings: Settings,
    connections: Connections,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued = await issue_key(connections, auth_settings, Role.READER, "t")
    read, answer = asyncio.Event(), asyncio.Event()

    async def read_then_wait(**arguments: Any) -> Role | None:
        role = await api_keys.role_of_key(**arguments)
        read.set()
        await answer.wait()
        return role

    monkeypatch.setattr("core.auth.role_of_key", read_then_wait)
    application = create_app(auth_settings)
    async with lifespan_client(application) as client:
        first = asyncio.create_task(_emails(client, f"Bearer {issued.key}"))
        await read.wait()
        secret = auth_settings.secret_key.get_secret_value()
        await api_keys.revoke_key(
            engine=connections.engine, secret=secret, key_or_id=str(issued.id)
        )
        application.state.authenticator.message(b"")  # the revocation, heard meanwhile
        answer.set()
        assert (await first).status_code == 200  # checked before the revocation
        assert (await _emails(client, f"Bearer {issued.key}")).status_code == 401


async def test_jwts_signed_with_the_secret_or_a_jwks_key(
    auth_client: httpx.AsyncClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    for token in (
        _token({"role": "reader"}),
        _token({"role": "editor"}, rsa_key, "RS256", kid="k1"),
    ):
        body = (await _emails(auth_client, f"Bearer {token}")).json()
        assert body["data"]["authors"]["edges"][0]["node"]["email"] == "ada@lab.example"


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer gwk_not-a-real-key",
        "Bearer not.a.jwt",
        f"Bearer {_token({'role': 'reader'}, 'another-secret-that-is-long-enough-too')}",
        f"Bearer {_token({'role': 'reader', 'exp': int(time.time()) - 10})}",
        f"Bearer {_token({'role': 'reader', 'aud': 'someone-else'})}",
        f"Bearer {_token({'role': 'superuser'})}",
        f"Bearer {_token({'role': 'admin'}, algorithm='HS512')}",
        f"Bearer {jwt.encode({'sub': 'x', 'role': 'admin'}, SECRET, algorithm='HS256')}",
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4Iiwicm9sZSI6ImFkbWluIn0.",
    ],
    ids=[
        "basic", "empty", "unknown key", "garbage", "wrong secret", "expired", "audience",
        "unknown role", "other algorithm", "no expiry", "alg none",
    ],
)  # fmt: skip
async def test_bad_credentials_are_unauthenticated(
    auth_client: httpx.AsyncClient, authorization: str
) -> None:
    response = await _emails(auth_client, authorization)
    assert response.status_code == 401
    body = response.json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_token_cannot_pick_hs256_with_the_public_key_as_secret(
    auth_settings: Settings, connections: Connections, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    pem = tmp_path / "public.pem"
    pem.write_bytes(_public_pem(rsa_key))
    only_rsa = auth_settings.model_copy(
        update={"jwt_secret": None, "jwks_file": None, "jwt_public_key_file": pem}
    )
    async with lifespan_client(create_app(only_rsa)) as client:
        good = _token({"role": "reader"}, rsa_key, "RS256")
        assert (await _emails(client, f"Bearer {good}")).status_code == 200
        hmac_token = jwt.api_jws.encode(
            json.dumps({"sub": "x", "role": "admin", "aud": "gateway",
                        "exp": int(time.time()) + 60}).encode(),
            b"any-secret-of-thirty-two-bytes-or-more", algorithm="HS256",
        )  # fmt: skip
        assert (await _emails(client, f"Bearer {hmac_token}")).status_code == 401


def test_apikey_commands_create_list_and_revoke(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("database_url", "mongo_url", "redis_url", "mongo_database", "data_dir"):
        monkeypatch.setenv(f"GATEWAY_{name.upper()}", str(getattr(settings, name)))
    monkeypatch.setenv("GATEWAY_LOG_LEVEL", "warning")
    assert cli.main(["apikey", "create", "--role", "editor", "--name", "ci"]) == 0
    created = capsys.readouterr().out
    key = created.split(": ")[-1].strip()
    assert key.startswith("gwk_")
    assert cli.main(["apikey", "list"]) == 0
    listing = capsys.readouterr().out
    assert "editor\tci\tactive" in listing
    assert key not in listing
    assert cli.main(["apikey", "revoke", key[:12]]) == 0
    assert cli.main(["apikey", "revoke", key[:12]]) == 1
    assert "no active key" in capsys.readouterr().err


async def test_websockets_authenticate_with_connection_init(
    auth_settings: Settings, connections: Connections
) -> None:
    issued = await issue_key(connections, auth_settings, Role.READER, "ws")
    async with serving(create_app(auth_settings)) as address:
        url = f"ws://{address}/graphql"
        protocol = [Subprotocol("graphql-transport-ws")]
        async with connect(url, subprotocols=protocol) as socket:
            await socket.send(json.dumps({
                "type": "connection_init", "payload": {"Authorization": f"Bearer {issued.key}"},
            }))  # fmt: skip
            assert json.loads(await socket.recv()) == {"type": "connection_ack"}
        async with connect(url, subprotocols=protocol) as socket:
            await socket.send(json.dumps({
                "type": "connection_init", "payload": {"Authorization": "Bearer gwk_wrong"},
            }))  # fmt: skip
            with pytest.raises(ConnectionClosed) as closed:
                await socket.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4403
