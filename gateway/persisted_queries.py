"""Automatic persisted queries, in the protocol Apollo's clients speak.

A request may name its document by ``extensions.persistedQuery`` (``version`` 1, and
``sha256Hash``, the SHA-256 of the document's text). With the hash alone, the gateway
answers with the document it keeps under that hash, or ``PERSISTED_QUERY_NOT_FOUND``, on
which the client sends hash and document together: the hash is checked, and a document
that parses and validates is kept, in Redis for every process (a document no one asks for
leaves after ``GATEWAY_PERSISTED_QUERY_TTL``) and in each process for the ones it met last.

With Redis down, look-ups find nothing and nothing is kept, so that clients send whole
documents and are served; the outage is logged once, not per request.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.errors import ErrorCode, request_error
from core.outages import Outage
from datasources.persisted_queries import digest_of, persist_query, persisted_query

logger = logging.getLogger(__name__)

PERSISTED_QUERY = "persistedQuery"
VERSION = 1
DIGEST = re.compile(r"[0-9a-f]{64}")
# Documents a process keeps beside Redis: a document never changes under its hash, so
# what a process keeps is never stale.
DOCUMENTS_KEPT = 1000
REDIS_FAILURES = (RedisError, OSError, TimeoutError)


class PersistedQueryError(Exception):
    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_USER_INPUT) -> None:
        super().__init__(message)
        self.error = request_error(message, code)


def requested_digest(extensions: Mapping[str, Any] | None) -> str | None:
    """The hash a request names its document by, if it does."""
    if extensions is None or PERSISTED_QUERY not in extensions:
        return None
    persisted = extensions[PERSISTED_QUERY]
    if not isinstance(persisted, dict):
        raise PersistedQueryError("extensions.persistedQuery must be a JSON object")
    if persisted.get("version", VERSION) != VERSION:
        raise PersistedQueryError(f"persisted queries are of version {VERSION}")
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest.lower()):
        raise PersistedQueryError(
            "extensions.persistedQuery.sha256Hash must be a SHA-256 in hexadecimal"
        )
    return digest.lower()


class PersistedQueries:
    def __init__(self, seconds: int) -> None:
        self._seconds = seconds
        self._kept: OrderedDict[str, str] = OrderedDict()
        self._outage = Outage(
            logger,
            began="persisted queries are unavailable while Redis is: clients send whole "
            "documents until it is back",
            ended="persisted queries are available again",
        )

    async def document(self, redis: Redis, digest: str, query: str | None) -> str:
        """The document a request names by ``digest``: ``query`` itself if it sent one
        (checked against the hash), else the one kept under the hash."""
        if query is not None:
            if digest_of(query) != digest:
                raise PersistedQueryError(
                    "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query"
                )
            return query
        found = self._kept.get(digest)
        if found is not None:
            self._kept.move_to_end(digest)
            return found
        try:
            found = await persisted_query(redis=redis, digest=digest)
        except REDIS_FAILURES as error:
            self._outage.failed(error)
            found = None
        else:
            self._outage.recovered()
        if found is None:
            raise PersistedQueryError(
                "persisted query not found: send the query with its hash",
                ErrorCode.PERSISTED_QUERY_NOT_FOUND,
            )
        self._keep(digest, found)
        return found

    async def register(self, redis: Redis, digest: str, query: str) -> None:
        """Keep ``query``, which parsed and validated, under its hash."""
        if digest in self._kept:
            return
        self._keep(digest, query)
        try:
            await persist_query(redis=redis, digest=digest, query=query, seconds=self._seconds)
        except REDIS_FAILURES as error:
            self._outage.failed(error)
        else:
            self._outage.recovered()

    def _keep(self, digest: str, query: str) -> None:
        self._kept[digest] = query
        if len(self._kept) > DOCUMENTS_KEPT:
            self._kept.popitem(last=False)

