"""Report documents in MongoDB: one flexible document per report, keyed by the report's id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase

from datasources.document_migrations import REPORT_DOCUMENTS


async def replace_documents(
    *, database: AsyncDatabase[dict[str, Any]], documents: Sequence[dict[str, Any]]
) -> None:
    """Write whole documents by ``_id``, creating the missing ones, in one bulk round trip."""
    if not documents:
        return
    await database[REPORT_DOCUMENTS].bulk_write(
        [ReplaceOne({"_id": document["_id"]}, document, upsert=True) for document in documents],
        ordered=False,
    )
