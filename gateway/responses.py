"""GraphQL over HTTP responses: their media types, which one a client gets, and JSON
bodies written whatever the payload holds."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.responses import Response

from core.errors import ErrorCode, shorten

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"
EVENT_STREAM = "text/event-stream"


def accepts_events(accept: str | None) -> bool:
    """Whether the client takes server-sent events (GraphQL over SSE)."""
    for media_range in (accept or "").split(","):
        media, *parameters = (part.strip() for part in media_range.split(";"))
        if media.lower() == EVENT_STREAM and not any(
            parameter.replace(" ", "").lower() in ("q=0", "q=0.0") for parameter in parameters
        ):
            return True
    return False


def response_type(accept: str | None) -> str | None:
    """The response media type the client accepts best, or None if neither is acceptable.
    No Accept, or one that takes anything, means an older client: application/json."""
    if not accept:
        return JSON
    best: tuple[float, int, str | None] = (0.0, 0, None)
    for media_range in accept.split(","):
        media, *parameters = (part.strip() for part in media_range.split(";"))
        media = media.lower()
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        # On equal quality, the specific GraphQL type first, then JSON, then wildcards.
        if media == GRAPHQL_RESPONSE_JSON:
            candidate = (quality, 3, GRAPHQL_RESPONSE_JSON)
        elif media == JSON:
            candidate = (quality, 2, JSON)
        elif media in ("*/*", "application/*"):
            candidate = (quality, 1, JSON)
        else:
            continue
        if candidate[0] > 0 and candidate[:2] > best[:2]:
            best = candidate
    return best[2]


def json_response(
    payload: dict[str, Any], status: int, media_type: str, headers: Mapping[str, str]
) -> Response:
    try:
        body = orjson.dumps(payload)
    except TypeError:
        # orjson refuses unpaired surrogates (quoted from a refused input in an error):
        # the standard encoder writes them as the JSON escapes they came as.
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "backslashreplace"
        )
    return Response(
        body, status_code=status, media_type=f"{media_type}; charset=utf-8", headers=headers
    )


def error_response(status: int, message: str, request_headers: Headers) -> Response:
    """A GraphQL JSON body for errors raised outside the endpoint (unknown paths, crashes)."""
    code = {500: ErrorCode.INTERNAL_SERVER_ERROR, 503: ErrorCode.SERVICE_UNAVAILABLE}.get(
        status, ErrorCode.BAD_USER_INPUT
    )
    media_type = response_type(request_headers.get("accept")) or JSON
    return json_response(
        {"errors": [{"message": shorten(message), "extensions": {"code": code.value}}]},
        status,
        media_type,
        {},
    )


def shutting_down(request_headers: Headers) -> Response:
    """The answer to a request that ran past the shutdown's grace period: a GraphQL one,
    rather than the server's plain-text 500."""
    return error_response(503, "the gateway is shutting down; try again", request_headers)
