"""A process that dies between a report's MongoDB write and its PostgreSQL commit.

Run by tests/test_consistency.py with the stores in GATEWAY_* variables; exits with 9.
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy.ext.asyncio import AsyncConnection

from core.connections import open_connections
from core.settings import Settings
from core.store_urls import StoreUrls
from datasources.report_writes import Authorship, DocumentContent, WriteFaults, create_report

EXIT_CODE = 9


async def die(_: AsyncConnection) -> None:
    os._exit(EXIT_CODE)


async def main() -> None:
    settings = Settings()
    connections = open_connections(
        settings, StoreUrls(settings.database_url, settings.mongo_url, settings.redis_url)
    )
    await create_report(
        engine=connections.engine,
        documents=connections.documents,
        fields={"title": "Consistent", "report_type_id": 1, "word_count": 10},
        authors=[Authorship(author_id=1, is_primary=True)],
        technology_ids=[],
        content=DocumentContent(),
        idempotency_key=None,
        faults=WriteFaults(after_document_written=die),
    )


if __name__ == "__main__":
    asyncio.run(main())
