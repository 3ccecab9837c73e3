"""Which browser origins may call the API, for CORS and for WebSocket handshakes alike.

``GATEWAY_CORS_ORIGINS`` lists them (comma-separated, or ``*``). Unset, production allows
none and development allows pages served from this machine (``localhost``, ``127.0.0.1``,
``[::1]``, any port), so a front end under development can call a local gateway.
"""

from __future__ import annotations

import json
import re

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from core.context import COST_HEADER, REQUEST_ID_HEADER, ROUND_TRIPS_HEADER
from core.errors import ErrorCode
from core.settings import Settings

LOCAL_ORIGIN = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?"
ALLOWED_HEADERS = ("authorization", "content-type", COST_HEADER, ROUND_TRIPS_HEADER)
PREFLIGHT_CACHE_SECONDS = 600


class OriginPolicy:
    def __init__(self, settings: Settings) -> None:
        configured = [
            origin.strip().rstrip("/")
            for origin in (settings.cors_origins or "").split(",")
            if origin.strip()
        ]
        self.origins = configured
        self.pattern = (
            LOCAL_ORIGIN if settings.cors_origins is None and settings.is_development else None
        )
        self.allow_credentials = settings.cors_allow_credentials

    def allows(self, origin: str) -> bool:
        origin = origin.rstrip("/")
        if "*" in self.origins or origin in self.origins:
            return True
        return self.pattern is not None and re.fullmatch(self.pattern, origin) is not None


class JSONErrorCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, with its refused preflights answered in JSON like every
    other error of the API."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        super().__init__(
            app,
            allow_origins=policy.origins,
            allow_origin_regex=policy.pattern,
            allow_methods=("GET", "HEAD", "POST"),
            allow_headers=ALLOWED_HEADERS,
            allow_credentials=policy.allow_credentials,
            expose_headers=(REQUEST_ID_HEADER,),
            max_age=PREFLIGHT_CACHE_SECONDS,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode(errors="replace")
        error = {"message": reason, "extensions": {"code": ErrorCode.FORBIDDEN.value}}
        body = json.dumps({"errors": [error]}).encode()
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-length", "content-type")
        }
        return Response(body, status_code=403, media_type="application/json", headers=headers)
