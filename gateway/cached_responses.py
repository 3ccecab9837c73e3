"""Answers from the response cache, and what decides which requests it may answer.

A request's cache key covers the caller's scope (its role: no field's value depends on
who the caller is beyond that) and either its raw bytes, looked up before anything is
parsed, or its operation in canonical form with its variables, looked up after, so that
two spellings of one query share an entry.

GET answers carry HTTP caching headers: ``public`` for anonymous callers, ``private``
otherwise, for as long as the entry has left, with an ``ETag`` that a matching
``If-None-Match`` turns into a 304. Every cacheable answer says ``X-Cache: HIT`` or
``MISS`` and its ``Age``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from core.auth import ANONYMOUS
from core.context import (
    COST_HEADER,
    EXECUTOR_HEADER,
    LOOKUPS_HEADER,
    REQUEST_ID_HEADER,
    ROUND_TRIPS_HEADER,
    Context,
)
from core.response_cache import Entry, Found

# Requests that ask how an operation runs are executed, never answered from the cache.
DIAGNOSTIC_HEADERS = (ROUND_TRIPS_HEADER, COST_HEADER, LOOKUPS_HEADER, EXECUTOR_HEADER)


def may_cache(request: Request) -> bool:
    headers = request.headers
    if any(name in headers for name in DIAGNOSTIC_HEADERS):
        return False
    asked = headers.get("cache-control", "").lower()
    return "no-cache" not in asked and "no-store" not in asked


def scope_of(context: Context) -> str:
    return context.viewer.access.name


def cache_key(*parts: str | bytes) -> str:
    hashed = hashlib.sha256()
    for part in parts:
        hashed.update(part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part)
        hashed.update(b"\0")
    return hashed.hexdigest()


def canonical(variables: Mapping[str, Any] | None) -> bytes:
    """The variables in one spelling: keys sorted, no spaces."""
    try:
        return orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits
        return json.dumps(variables, sort_keys=True, separators=(",", ":")).encode()


def cached(request: Request, context: Context, found: Found, media_type: str) -> Response:
    assert found.entry is not None
    extensions = None
    if context.settings.is_development:
        extensions = {"cache": {"hit": True, "tier": found.tier, "age": found.entry.age}}
    return entry_response(
        request, context, found.entry, media_type, hit=True, extensions=extensions
    )


def entry_response(
    request: Request,
    context: Context,
    entry: Entry,
    media_type: str,
    *,
    hit: bool,
    extensions: Mapping[str, Any] | None,
) -> Response:
    headers = {
        REQUEST_ID_HEADER: context.request_id,
        "x-cache": "HIT" if hit else "MISS",
        "age": str(entry.age if hit else 0),
    }
    if request.method in ("GET", "HEAD"):
        privacy = "public" if context.viewer == ANONYMOUS else "private"
        headers["cache-control"] = f"{privacy}, max-age={entry.remaining}"
        headers["etag"] = entry.etag
        headers["vary"] = "Authorization"
        if entry.etag in _tags_in(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
    body = entry.body
    if extensions:
        # The stored body is an object ending with its "data": the extensions follow it.
        body = body[:-1] + b',"extensions":' + orjson.dumps(extensions) + b"}"
    return Response(
        body, status_code=200, media_type=f"{media_type}; charset=utf-8", headers=headers
    )


def _tags_in(header: str) -> set[str]:
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return tags - {""}
