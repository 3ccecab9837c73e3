"""Browsers on other origins: CORS for the allowed ones, nothing for the rest, and no way to
make a browser change data cross-site without a preflight."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from core.settings import Environment, Settings
from gateway.app import create_app
from gateway.cors import OriginPolicy
from tests.clients import Seeded, lifespan_client, serving

APP_ORIGIN = "https://app.example"
PREFLIGHT = {
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}


async def test_development_allows_pages_served_from_this_machine(seeded: Seeded) -> None:
    for origin in ("http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]:8080"):
        response = await seeded.client.options("/graphql", headers={"origin": origin, **PREFLIGHT})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == origin
        assert "POST" in response.headers["access-control-allow-methods"]
        allowed = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed
        assert "content-type" in allowed


async def test_other_origins_get_no_cors_headers(seeded: Seeded) -> None:
    preflight = await seeded.client.options(
        "/graphql", headers={"origin": "https://evil.example", **PREFLIGHT}
    )
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    simple = await seeded.client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"origin": "https://evil.example"}
    )
    # The server answers, but the browser keeps the answer from the page.
    assert "access-control-allow-origin" not in simple.headers


async def test_configured_origins_with_credentials(settings: Settings) -> None:
    configured = settings.model_copy(
        update={
            "cors_origins": f"{APP_ORIGIN}, https://admin.example",
            "cors_allow_credentials": True,
        }
    )
    async with lifespan_client(create_app(configured)) as client:
        allowed = await client.options("/graphql", headers={"origin": APP_ORIGIN, **PREFLIGHT})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
        assert allowed.headers["access-control-allow-credentials"] == "true"
        response = await client.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"origin": APP_ORIGIN}
        )
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN
        assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
        local = await client.options(
            "/graphql", headers={"origin": "http://localhost:3000", **PREFLIGHT}
        )
        assert local.status_code == 403  # configured origins replace the development default


def test_production_allows_no_origin_unless_configured(settings: Settings) -> None:
    production = settings.model_copy(update={"environment": Environment.PRODUCTION})
    assert not OriginPolicy(production).allows("http://localhost:3000")
    anyone = production.model_copy(update={"cors_origins": "*"})
    assert OriginPolicy(anyone).allows("https://anywhere.example")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        ("query=mutation", "application/x-www-form-urlencoded"),
        ('{"query": "mutation { recordView(reportId: \\"1\\") { __typename } }"}', "text/plain"),
        (
            "--x\r\nContent-Disposition: form-data; name=query\r\n\r\nmutation\r\n--x--",
            "multipart/form-data; boundary=x",
        ),
    ],
    ids=["form", "text/plain", "multipart"],
)
async def test_requests_a_page_can_send_without_preflight_run_nothing(
    seeded: Seeded, content: str, content_type: str
) -> None:
    before = await seeded.data('{ report(id: "1") { stats { views } } }')
    response = await seeded.client.post(
        "/graphql",
        content=content.encode(),
        headers={"content-type": content_type, "origin": "https://evil.example"},
    )
    assert response.status_code == 415
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert await seeded.data('{ report(id: "1") { stats { views } } }') == before


async def test_websockets_from_other_sites_are_refused(settings: Settings) -> None:
    async with serving(create_app(settings)) as address:
        protocols = [Subprotocol("graphql-transport-ws")]
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                f"ws://{address}/graphql",
                subprotocols=protocols,
                origin="https://evil.example",  # type: ignore[arg-type]
            ):
                pass
        assert refused.value.response.status_code == 403
        async with connect(
            f"ws://{address}/graphql",
            subprotocols=protocols,
            origin="http://localhost:5173",  # type: ignore[arg-type]
        ) as socket:
            await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await socket.recv()) == {"type": "connection_ack"}
