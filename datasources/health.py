"""One cheap round trip to each store, to tell whether it answers."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def ping_postgres(*, engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def ping_mongo(*, client: AsyncMongoClient[dict[str, Any]]) -> None:
    await client.admin.command("ping")


async def ping_redis(*, redis: Redis) -> None:
    await redis.ping()
