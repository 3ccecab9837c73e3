"""Alembic environment: runs on a connection the gateway hands over, or on its own engine."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from sqlalchemy import Connection

from alembic import context
from core.settings import ENV_PREFIX, Settings
from datasources.dialects import relational_engine
from datasources.models import Base
from gateway.migrate import comparison

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transaction_per_migration=True,
        **comparison(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url") or Settings().database_url
    if url is None:
        raise SystemExit(
            f"set {ENV_PREFIX}DATABASE_URL, or run `gateway migrate` to use the embedded server"
        )
    return url


async def run_on_own_engine() -> None:
    engine = relational_engine(database_url(), timeout=Settings().store_timeout)
    async with engine.begin() as connection:
        await connection.run_sync(run_migrations)
    await engine.dispose()


handed_over = config.attributes.get("connection")
if handed_over is not None:
    run_migrations(handed_over)
elif context.is_offline_mode():
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    asyncio.run(run_on_own_engine())
