"""Persisted queries, under the SHA-256 of their text.

Automatic ones are kept in Redis: a client that has sent a document once sends its hash
from then on (a short GET that HTTP caches can keep, instead of a long POST). The
allow-list, the operations a gateway that accepts nothing else serves, is configuration
and lives in PostgreSQL, where losing Redis's data cannot empty it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from datasources.dialects import backend_of
from datasources.models import PersistedQuery

ALLOWED: Any = PersistedQuery.__table__


@dataclass(frozen=True)
class AllowedQuery:
    sha256: str
    document: str
    operation_name: str | None


def persisted_query_key(digest: str) -> str:
    return f"persisted-query:{digest}"


def digest_of(query: str) -> str:
    """The hash a client sends for ``query``: SHA-256 of its UTF-8 text, in lowercase hex."""
    return hashlib.sha256(query.encode("utf-8", "surrogatepass")).hexdigest()


async def persisted_query(*, redis: Redis, digest: str) -> str | None:
    stored = await redis.get(persisted_query_key(digest))
    if stored is None:
        return None
    return stored.decode("utf-8", "surrogatepass") if isinstance(stored, bytes) else str(stored)


async def persist_query(*, redis: Redis, digest: str, query: str, seconds: int) -> None:
    """Keep ``query`` under ``digest`` for ``seconds``: a document no client asks for again
    leaves Redis by itself."""
    await redis.set(persisted_query_key(digest), query.encode("utf-8", "surrogatepass"), ex=seconds)


async def allowed_query(*, engine: AsyncEngine, digest: str) -> str | None:
    """The allow-listed document under ``digest``, if any."""
    async with engine.connect() as connection:
        document: str | None = await connection.scalar(
            select(ALLOWED.c.document).where(ALLOWED.c.sha256 == digest)
        )
    return document


async def allow_queries(*, engine: AsyncEngine, queries: Sequence[AllowedQuery]) -> None:
    """Add ``queries`` to the allow-list (one already there is the same document, by its
    hash: only its name may change)."""
    async with engine.begin() as connection:
        await backend_of(connection).upsert_rows(
            connection,
            table=ALLOWED,
            rows=[{"sha256": query.sha256, "document": query.document,
                   "operation_name": query.operation_name} for query in queries],
            keys=["sha256"],
        )  # fmt: skip
