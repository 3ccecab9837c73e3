"""The pages a browser gets: GraphiQL on ``/graphql`` and the live dashboard on
``/dashboard``, with every file they load served by the gateway itself.

Many users' machines, and this project's, have no internet: a page that loads its code
from a CDN is a blank page there. So GraphiQL and its libraries are vendored, one folder
per npm package and version under ``static/vendor/`` (its README says where each file
comes from), and served under ``/assets/vendor/``; the pages' own scripts and styles are
under ``/assets/``. Each page's Content-Security-Policy lets it load nothing from another
host.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"
DASHBOARD_PATH = "/dashboard"
# A vendored file's path names its package's version, so what it holds never changes.
IMMUTABLE = "public, max-age=31536000, immutable"
# The pages' own files change with the gateway: browsers keep them but ask again each time
# (a 304 when unchanged).
REVALIDATE = "no-cache"
# Everything from this origin, nothing inline but styles (GraphiQL's editors and plugins
# are free to style their elements, which runs no code). connect-src 'self' covers the
# WebSocket to the same host and port.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)


class _Files(StaticFiles):
    """Starlette's static files, each response with ``Cache-Control``."""

    def __init__(self, directory: Path, cache_control: str) -> None:
        super().__init__(directory=directory)
        self._cache_control = cache_control

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = self._cache_control
        return response


@cache
def _html(name: str) -> bytes:
    return (STATIC / "pages" / f"{name}.html").read_bytes()


def _page(name: str) -> HTMLResponse:
    return HTMLResponse(
        _html(name),
        headers={
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "cache-control": REVALIDATE,
        },
    )


def graphiql_page() -> Response:
    return _page("graphiql")


async def _dashboard(_: Request) -> Response:
    return _page("dashboard")


def page_routes() -> list[BaseRoute]:
    return [
        Route(DASHBOARD_PATH, _dashboard, methods=["GET", "HEAD"]),
        Mount("/assets/vendor", _Files(STATIC / "vendor", IMMUTABLE)),
        Mount("/assets", _Files(STATIC / "assets", REVALIDATE)),
    ]
