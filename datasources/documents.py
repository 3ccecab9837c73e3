"""Report documents in MongoDB: one flexible document per report, keyed by the report's id."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from pymongo import ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase

from datasources.document_migrations import REPORT_DOCUMENT_SCHEMA, REPORT_DOCUMENTS

# The fields of a report's document besides its key, which every projection includes.
DOCUMENT_FIELDS = frozenset(REPORT_DOCUMENT_SCHEMA["properties"]) - {"_id"}
# Every document a read finds, in the reply to its find: a server's own first batch is
# 101 documents (MongoDB's; the embedded server's every batch), and each batch after it
# is another round trip, so a read's round trips would grow with its rows. A server still
# sends no more than 16 MiB at once, and the cursor fetches the rest.
ONE_BATCH = 2**31 - 1


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


async def documents_by_report(
    *,
    database: AsyncDatabase[dict[str, Any]],
    report_ids: Sequence[int],
    paths: Collection[str] | None = None,
) -> list[dict[str, Any] | None]:
    """The reports' documents; with ``paths`` (dotted, as MongoDB names them), only those
    parts of each: a selection of a few fields fetches and decodes a few fields.

    Whole, though, when the paths name more than half of a document's fields: a server
    spends work on every path a projection names (the embedded one more than it spends
    sending the whole document), and what the few paths left out would save is small.
    """
    projection = None
    if paths is not None and 2 * len(paths) <= len(DOCUMENT_FIELDS):
        projection = dict.fromkeys(paths, 1)
    cursor = database[REPORT_DOCUMENTS].find(
        {"_id": {"$in": list(report_ids)}}, projection, batch_size=ONE_BATCH
    )
    # In one call, not a step of iteration per document.
    found = {document["_id"]: document for document in await cursor.to_list()}
    return [found.get(report_id) for report_id in report_ids]


async def report_ids_tagged(
    *, database: AsyncDatabase[dict[str, Any]], tags: Sequence[str]
) -> list[int]:
    """Ids of the reports whose document carries any of ``tags``."""
    cursor = database[REPORT_DOCUMENTS].find(
        {"tags": {"$in": list(tags)}}, {"_id": 1}, batch_size=ONE_BATCH
    )
    return [int(document["_id"]) for document in await cursor.to_list()]
