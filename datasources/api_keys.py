"""API keys in PostgreSQL: created, looked up by hash, revoked.

Only an HMAC of each key is stored, keyed with the gateway's secret: a copy of the table
alone does not let anyone test guesses. Changing GATEWAY_SECRET_KEY invalidates all keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources.channels import on_server
from datasources.models import ApiKey, Role

API_KEYS: Any = ApiKey.__table__
# Recognisable in logs and secret scanners; the rest is 256 random bits.
KEY_PREFIX = "gwk_"
# Published to after keys were revoked: processes forget the keys they checked lately.
REVOKED_CHANNEL = "gateway:api-keys-revoked"


@dataclass(frozen=True)
class IssuedKey:
    id: int
    key: str
    role: Role


def key_hash(key: str, secret: str) -> str:
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


async def create_key(*, engine: AsyncEngine, secret: str, name: str, role: Role) -> IssuedKey:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    async with engine.begin() as connection:
        key_id = await connection.scalar(
            insert(API_KEYS)
            .values(name=name, prefix=key[:12], key_hash=key_hash(key, secret), role=role.value)
            .returning(API_KEYS.c.id)
        )
    assert key_id is not None
    return IssuedKey(id=key_id, key=key, role=role)


async def role_of_key(*, engine: AsyncEngine, secret: str, key: str) -> Role | None:
    """The role of an active key, or None for an unknown or revoked one."""
    async with engine.connect() as connection:
        role = await connection.scalar(
            select(API_KEYS.c.role).where(
                API_KEYS.c.key_hash == key_hash(key, secret), API_KEYS.c.revoked_at.is_(None)
            )
        )
    return None if role is None else Role(role)


async def revoke_key(*, engine: AsyncEngine, secret: str, key_or_id: str) -> int:
    """Revoke by id, by the key's shown prefix, or by the key itself; returns how many."""
    match = [API_KEYS.c.prefix == key_or_id, API_KEYS.c.key_hash == key_hash(key_or_id, secret)]
    if key_or_id.isdigit():
        match.append(API_KEYS.c.id == int(key_or_id))
    async with engine.begin() as connection:
        result = await connection.execute(
            update(API_KEYS)
            .where(or_(*match), API_KEYS.c.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )
    return result.rowcount


async def announce_revocation(*, redis: Redis) -> None:
    await redis.publish(on_server(redis, REVOKED_CHANNEL), b"")


@dataclass(frozen=True)
class KeyListing:
    id: int
    name: str
    prefix: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


async def list_keys(*, engine: AsyncEngine) -> list[KeyListing]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(API_KEYS).order_by(API_KEYS.c.id))
        return [
            KeyListing(row.id, row.name, row.prefix, row.role, row.created_at, row.revoked_at)
            for row in rows
        ]
