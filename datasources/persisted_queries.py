"""Automatic persisted queries: documents kept in Redis under the SHA-256 of their text, so
that a client that has sent a document once sends its hash from then on (a short GET that
HTTP caches can keep, instead of a long POST)."""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis


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
