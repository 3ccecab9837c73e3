"""Automatic persisted queries, in the protocol Apollo's clients speak.

A request may name its document by ``extensions.persistedQuery`` (``version`` 1, and
``sha256Hash``, the SHA-256 of the document's text). With the hash alone, the gateway
answers with the document it keeps under that hash, or ``PERSISTED_QUERY_NOT_FOUND``, on
which the client sends hash and document together: the hash is checked, and a document
that parses and validates is kept, in Redis for every process (a document no one asks for
leaves after ``GATEWAY_PERSISTED_QUERY_TTL``) and in each process for the ones it met last.

With Redis down, look-ups find nothing and nothing is kept, so that clients send whole
documents and are served; the outage is logged once, not per request.

In the allow-list mode (``GATEWAY_PERSISTED_QUERIES_ONLY``, on by default in production)
the gateway runs only the operations loaded with ``gateway persisted add``, kept in
PostgreSQL: by hash, or by a document that is one of them; any other document gets
``PERSISTED_QUERY_NOT_IN_LIST``, and nothing a client sends is registered.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError

from core.connections import Connections
from core.errors import ErrorCode, request_error
from core.metrics import PERSISTED_QUERIES
from core.outages import Outage
from core.settings import Settings
from core.stores import Store, unavailable
from datasources.persisted_queries import (
    AllowedQuery,
    allowed_query,
    digest_of,
    persist_query,
    persisted_query,
)
from gateway.operations import OperationCache

logger = logging.getLogger(__name__)

PERSISTED_QUERY = "persistedQuery"
VERSION = 1
DIGEST = re.compile(r"[0-9a-f]{64}")
# Documents a process keeps beside Redis: a document never changes under its hash, so
# what a process keeps is never stale.
DOCUMENTS_KEPT = 1000
REDIS_FAILURES = (RedisError, OSError, TimeoutError)
# Documents found by hash (or in the allow-list), hashes not found, documents refused by
# the allow-list, and documents registered.
_FOUND, _NOT_FOUND, _NOT_IN_LIST, _REGISTERED = (
    PERSISTED_QUERIES.labels(result).inc
    for result in ("found", "not_found", "not_in_list", "registered")
)


class PersistedQueryError(Exception):
    def __init__(
        self, message: str, code: ErrorCode = ErrorCode.BAD_USER_INPUT, status: int = 400
    ) -> None:
        super().__init__(message)
        self.error = request_error(message, code)
        self.status = status


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
    """The documents requests name by hash. With ``only`` (the allow-list mode), every
    request must name an operation of the allow-list, by hash or by its document, and
    nothing a client sends is kept; otherwise clients register their own (APQ)."""

    def __init__(self, settings: Settings) -> None:
        self._seconds = settings.persisted_query_ttl
        self.only = settings.accepts_only_persisted_queries
        # Documents met last: registered ones, or allow-listed ones in the allow-list mode.
        self._kept: OrderedDict[str, str] = OrderedDict()
        self._outage = Outage(
            logger,
            began="persisted queries are unavailable while Redis is: clients send whole "
            "documents until it is back",
            ended="persisted queries are available again",
        )

    async def document(self, stores: Connections, digest: str | None, query: str | None) -> str:
        """The document a request runs: the one kept under ``digest`` if it sent no
        ``query``, else ``query`` itself, checked against the hash, and in the allow-list
        mode against the allow-list."""
        if query is not None:
            if digest is not None and digest_of(query) != digest:
                raise PersistedQueryError(
                    "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query"
                )
            if not self.only:
                return query
            digest = digest_of(query)
        assert digest is not None, "a request with no query names its document by hash"
        found = self._kept.get(digest)
        if found is not None:
            self._kept.move_to_end(digest)
            _FOUND()
            return found
        found = await (
            self._allowed(stores, digest) if self.only else self._registered(stores, digest)
        )
        if found is None:
            if query is not None:
                _NOT_IN_LIST()
                raise PersistedQueryError(
                    "this gateway runs only the operations of its allow-list",
                    ErrorCode.PERSISTED_QUERY_NOT_IN_LIST,
                    403,
                )
            _NOT_FOUND()
            raise PersistedQueryError(
                "persisted query not found: send the query with its hash",
                ErrorCode.PERSISTED_QUERY_NOT_FOUND,
            )
        _FOUND()
        self._keep(digest, found)
        return found

    async def _registered(self, stores: Connections, digest: str) -> str | None:
        try:
            found = await persisted_query(redis=stores.redis, digest=digest)
        except REDIS_FAILURES as error:
            self._outage.failed(error)
            return None
        self._outage.recovered()
        return found

    async def _allowed(self, stores: Connections, digest: str) -> str | None:
        try:
            return await allowed_query(engine=stores.reader, digest=digest)
        except Exception as error:
            if not unavailable(Store.POSTGRES, error):
                raise
            raise PersistedQueryError(
                "postgres is unavailable; try again later", ErrorCode.SERVICE_UNAVAILABLE, 503
            ) from error

    async def register(self, stores: Connections, digest: str, query: str) -> None:
        """Keep ``query``, which parsed and validated, under its hash; never in the
        allow-list mode, where only the allow-list is served."""
        if self.only or digest in self._kept:
            return
        _REGISTERED()
        self._keep(digest, query)
        try:
            await persist_query(
                redis=stores.redis, digest=digest, query=query, seconds=self._seconds
            )
        except REDIS_FAILURES as error:
            self._outage.failed(error)
        else:
            self._outage.recovered()

    def _keep(self, digest: str, query: str) -> None:
        self._kept[digest] = query
        if len(self._kept) > DOCUMENTS_KEPT:
            self._kept.popitem(last=False)


def allow_list_of(text: str, operations: OperationCache) -> list[AllowedQuery]:
    """The operations of an allow-list file: Apollo's persisted-query manifest
    (``{"format": "apollo-persisted-query-manifest", "operations": [{"id", "name",
    "body"}]}``), or a JSON object of documents by their SHA-256. Every hash must be its
    document's, and every document must parse and validate: ValueError says which do not.
    """
    try:
        manifest = json.loads(text)
    except ValueError as error:
        raise ValueError(f"not JSON: {error}") from error
    if isinstance(manifest, dict) and isinstance(manifest.get("operations"), list):
        entries = [
            (entry.get("id"), entry.get("body"), entry.get("name"))
            for entry in manifest["operations"]
            if isinstance(entry, dict)
        ]
    elif isinstance(manifest, dict):
        entries = [(digest, body, None) for digest, body in manifest.items()]
    else:
        raise ValueError("expected a persisted-query manifest or an object of documents")
    allowed, problems = [], []
    for digest, body, name in entries:
        if not isinstance(digest, str) or not isinstance(body, str):
            problems.append(f"{digest!r}: an id and a document are strings")
        elif digest.lower() != digest_of(body):
            problems.append(f"{digest}: not the SHA-256 of its document")
        elif errors := operations.prepare(body).errors:
            problems.append(f"{digest}: {errors[0].message}")
        else:
            allowed.append(
                AllowedQuery(digest.lower(), body, name if isinstance(name, str) else None)
            )
    if problems:
        raise ValueError("; ".join(problems))
    return allowed
