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

import asyncio
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.auth import ANONYMOUS
from core.context import (
    COST_HEADER,
    EXECUTOR_HEADER,
    EXPLAIN_HEADER,
    LOOKUPS_HEADER,
    REQUEST_ID_HEADER,
    ROUND_TRIPS_HEADER,
    Context,
    request_id_of,
)
from core.response_cache import Entry, Found, ResponseCache
from core.settings import Settings
from gateway.metrics import EARLY_HIT
from gateway.responses import response_type, shutting_down

# Requests that ask how an operation runs are executed, never answered from the cache.
DIAGNOSTIC_HEADERS = (
    ROUND_TRIPS_HEADER,
    COST_HEADER,
    LOOKUPS_HEADER,
    EXECUTOR_HEADER,
    EXPLAIN_HEADER,
)
# What EarlyHits leaves to the endpoint: callers to authenticate, origins to answer with
# CORS headers, and diagnostic requests.
EARLY_REFUSED = tuple(name.encode() for name in ("authorization", "origin", *DIAGNOSTIC_HEADERS))
ANONYMOUS_SCOPE = ANONYMOUS.access.name
# Where EarlyHits leaves the key and what it found, for the endpoint to go on with.
EARLY_LOOKUP = "gateway.cache_lookup"


def may_cache(request: Request) -> bool:
    headers = request.headers
    if any(name in headers for name in DIAGNOSTIC_HEADERS):
        return False
    return may_cache_headers(headers.get("cache-control", ""))


def may_cache_headers(cache_control: str) -> bool:
    asked = cache_control.lower()
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
    return entry_response(
        found.entry,
        media_type,
        hit=True,
        extensions=_hit_extensions(found) if context.settings.is_development else None,
        method=request.method,
        if_none_match=request.headers.get("if-none-match", ""),
        request_id=context.request_id,
        public=context.viewer == ANONYMOUS,
    )


def _hit_extensions(found: Found) -> dict[str, Any]:
    assert found.entry is not None
    return {"cache": {"hit": True, "tier": found.tier, "age": found.entry.age}}


def entry_response(
    entry: Entry,
    media_type: str,
    *,
    hit: bool,
    extensions: Mapping[str, Any] | None,
    method: str,
    if_none_match: str,
    request_id: str,
    public: bool,
) -> Response:
    headers = {
        REQUEST_ID_HEADER: request_id,
        "x-cache": "HIT" if hit else "MISS",
        "age": str(entry.age if hit else 0),
    }
    if method in ("GET", "HEAD"):
        headers["cache-control"] = f"{'public' if public else 'private'}, max-age={entry.remaining}"
        headers["etag"] = entry.etag
        headers["vary"] = "Authorization"
        if entry.etag in _tags_in(if_none_match):
            return Response(status_code=304, headers=headers)
    body = entry.body
    if extensions:
        # The stored body is an object ending with its "data": the extensions follow it.
        tail = b',"extensions":' + orjson.dumps(extensions) + b"}"
        body = b"".join((memoryview(body)[:-1], tail))
    return Response(
        body, status_code=200, media_type=f"{media_type}; charset=utf-8", headers=headers
    )


class EarlyHits:
    """Anonymous requests answered from the cache before the rest of the stack sees them.

    A hit should cost about what returning its bytes does; for an anonymous caller with no
    ``Origin`` (nothing to authenticate, no CORS headers to add), everything between the
    server and the cache (middleware, routing, a request object, a context) is most of
    what it costs. Only such requests, of acceptable media types and sizes, are looked up
    here; on a miss the endpoint is given the request, its body and what the look-up
    found, and answers as it does any other. Every other request goes to it untouched.
    """

    def __init__(self, app: ASGIApp, path: str, settings: Settings) -> None:
        self._app = app
        self._path = path
        self._limit = settings.max_request_bytes
        self._development = settings.is_development

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = self._plain(scope)
        cache: ResponseCache | None = getattr(scope["app"].state, "response_cache", None)
        if headers is None or cache is None:
            await self._app(scope, receive, send)
            return
        media_type = response_type(headers.get(b"accept", b"").decode("latin-1") or None)
        method = scope["method"]
        body = b""
        if method == "POST":
            length = headers.get(b"content-length", b"")
            if media_type is None or not length.isdigit() or int(length) > self._limit:
                await self._app(scope, receive, send)
                return
            body = await _read_body(receive)
        elif media_type is None or not scope["query_string"]:
            await self._app(scope, receive, send)
            return
        key = cache_key(ANONYMOUS_SCOPE, method, body or scope["query_string"])
        try:
            found = await cache.find(key)
        except asyncio.CancelledError:
            # Shutting down, past the grace period, with Redis slow to answer.
            await shutting_down(Headers(scope=scope))(scope, receive, send)
            raise
        if found.entry is None:
            scope[EARLY_LOOKUP] = (key, found)
            await self._app(scope, _replaying(body, receive), send)
            return
        response = entry_response(
            found.entry,
            media_type,
            hit=True,
            extensions=_hit_extensions(found) if self._development else None,
            method=method,
            if_none_match=headers.get(b"if-none-match", b"").decode("latin-1"),
            request_id=request_id_of(headers.get(b"x-request-id", b"").decode("latin-1")),
            public=True,
        )
        EARLY_HIT()
        await response(scope, receive, send)

    def _plain(self, scope: Scope) -> dict[bytes, bytes] | None:
        """The headers of a request this may answer: to the path, by GET or POST, anonymous,
        with no origin, JSON if it has a body, and not asking to bypass the cache."""
        if scope["type"] != "http" or scope["path"] != self._path:
            return None
        if scope["method"] not in ("GET", "POST"):
            return None
        headers = dict(scope["headers"])
        if any(name in headers for name in EARLY_REFUSED):
            return None
        if not may_cache_headers(headers.get(b"cache-control", b"").decode("latin-1")):
            return None
        if scope["method"] == "POST":
            content_type = headers.get(b"content-type", b"").lower().replace(b" ", b"")
            if content_type not in (b"application/json", b"application/json;charset=utf-8"):
                return None
        return headers


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive``, whose request body was read already: it is given again first."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _tags_in(header: str) -> set[str]:
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return tags - {""}
