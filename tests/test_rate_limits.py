"""Rate limits against the real stores: budgets in cost units shared by two app instances
on one Redis, per role, per client address behind trusted proxies only; refusals over HTTP
(429 with its headers) and WebSocket; cache hits free; Redis stopped fails open.

Budgets are per day, so that nothing comes back during a test: every count is exact."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from core.connections import Connections
from core.settings import Settings
from datasources.counters import counters_by_report
from datasources.models import Role
from datasources.rate_limits import Spending, spend
from gateway import cli
from gateway.app import create_app
from resolvers.nodes import to_global_id
from tests.clients import LEGACY, Caller, issue_key, lifespan_client, serving, websocket
from tests.faults import own_redis
from tests.test_subscriptions import STATS
from tests.waiting import eventually

# Costs 2n + 6: a page of n titles (see gateway/limits.py).
PAGE = "query($n: Int!) { reports(first: $n) { edges { node { title } } } }"
VIEW = "mutation($id: ID!) { recordView(reportId: $id) { __typename } }"
REPORT_ID = to_global_id("Report", 3)
GRAPHQL_RESPONSE = "application/graphql-response+json"


def _cost(n: int) -> int:
    return 2 * n + 6


def limited(settings: Settings, budget: str, **update: Any) -> Settings:
    return settings.model_copy(update={"rate_limit": budget, "response_cache": False, **update})


async def _page(
    client: httpx.AsyncClient,
    n: int,
    forwarded: str | None = None,
    *,
    expect: int = 200,
    **headers: str,
) -> httpx.Response:
    if forwarded is not None:
        headers["x-forwarded-for"] = forwarded
    response = await client.post(
        "/graphql", json={"query": PAGE, "variables": {"n": n}}, headers=headers
    )
    assert response.status_code == expect, response.text
    return response


def _remaining(response: httpx.Response) -> int:
    return int(response.headers["ratelimit-remaining"])


@asynccontextmanager
async def _running(application: Starlette) -> AsyncIterator[Starlette]:
    async with application.router.lifespan_context(application):
        yield application


def _from(application: Starlette, address: str) -> httpx.AsyncClient:
    """A client whose requests come from ``address``, as a server's peer."""
    transport = httpx.ASGITransport(app=application, client=(address, 50_000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


async def test_two_app_instances_on_one_redis_share_a_budget(settings: Settings) -> None:
    shared = limited(settings, "1000/24h")
    async with (
        lifespan_client(create_app(shared)) as first,
        lifespan_client(create_app(shared)) as second,
    ):
        assert _remaining(await _page(first, 10)) == 1000 - _cost(10)
        assert _remaining(await _page(second, 20)) == 1000 - _cost(10) - _cost(20)
        answered = await _page(first, 1)
        assert _remaining(answered) == 1000 - _cost(10) - _cost(20) - _cost(1)
        assert answered.headers["ratelimit-limit"] == "1000"
        assert answered.headers["ratelimit-policy"] == "1000;w=86400"
        assert 0 < int(answered.headers["ratelimit-reset"]) <= 86400


async def test_an_operation_spends_its_cost(settings: Settings) -> None:
    async with lifespan_client(create_app(limited(settings, "100000/24h"))) as client:
        cheap = await _page(client, 1)
        expensive = await _page(client, 100)
        costs = [r.json()["extensions"]["cost"]["requested"] for r in (cheap, expensive)]
        assert costs == [_cost(1), _cost(100)]
        assert _remaining(cheap) == 100_000 - costs[0]
        assert _remaining(expensive) == 100_000 - costs[0] - costs[1]
        assert costs[1] > 20 * costs[0]


async def test_each_role_has_its_own_budget(settings: Settings, connections: Connections) -> None:
    roles = settings.model_copy(
        update={"rate_limits_by_role": {"admin": "0", "editor": "5000/24h"}}
    )
    keys = {role: (await issue_key(connections, settings, role)).key for role in Role}
    async with lifespan_client(create_app(limited(roles, "1000/24h"))) as client:

        async def as_(role: Role) -> httpx.Response:
            return await _page(client, 10, authorization=f"Bearer {keys[role]}")

        anonymous = await _page(client, 10)
        reader, editor, admin = (
            await as_(Role.READER),
            await as_(Role.EDITOR),
            await as_(Role.ADMIN),
        )
    assert anonymous.headers["ratelimit-limit"] == reader.headers["ratelimit-limit"] == "1000"
    # Each caller spends its own budget: the reader's key is not the anonymous address.
    assert _remaining(anonymous) == _remaining(reader) == 1000 - _cost(10)
    assert editor.headers["ratelimit-limit"] == "5000"
    assert _remaining(editor) == 5000 - _cost(10)
    assert not any(name.startswith("ratelimit") for name in admin.headers)


async def test_only_trusted_proxies_name_the_caller(settings: Settings) -> None:
    proxies = limited(settings, "1000/24h", trusted_proxies="10.0.0.0/8, 2001:db8:ffff::1")
    async with _running(create_app(proxies)) as application:
        async with _from(application, "203.0.113.7") as stranger:
            # An untrusted peer is itself, whatever it says it forwards.
            first = await _page(stranger, 1, "198.51.100.1")
            second = await _page(stranger, 1, "198.51.100.2")
            assert _remaining(second) == _remaining(first) - _cost(1) == 1000 - 2 * _cost(1)
        async with _from(application, "10.0.0.1") as proxy:
            one = await _page(proxy, 2, "198.51.100.1")
            other = await _page(proxy, 2, "198.51.100.2")
            assert _remaining(one) == _remaining(other) == 1000 - _cost(2)
            # What the client wrote left of the address the proxy saw is not believed,
            # and a chain of trusted proxies is walked through.
            spoofed = await _page(proxy, 2, "192.0.2.9, 198.51.100.1")
            chained = await _page(proxy, 2, "198.51.100.1, 10.9.9.9")
            assert _remaining(spoofed) == 1000 - 2 * _cost(2)
            assert _remaining(chained) == 1000 - 3 * _cost(2)
            # With nothing forwarded, the proxy is the caller.
            assert _remaining(await _page(proxy, 2)) == 1000 - _cost(2)
        async with _from(application, "2001:db8:ffff::1") as proxy:
            # One subscriber's IPv6 addresses share a /64, mapped IPv4 is IPv4.
            first = await _page(proxy, 3, "2001:db8:1:2::1")
            second = await _page(proxy, 3, "2001:db8:1:2::ff")
            mapped = await _page(proxy, 3, "::ffff:198.51.100.2")
            assert _remaining(second) == _remaining(first) - _cost(3)
            assert _remaining(mapped) == 1000 - _cost(2) - _cost(3)


async def test_a_spent_budget_is_a_429_with_its_headers(settings: Settings) -> None:
    async with lifespan_client(create_app(limited(settings, "100/24h"))) as client:
        assert _remaining(await _page(client, 22)) == 100 - _cost(22)
        for accept in ("application/json", GRAPHQL_RESPONSE):
            refused = await _page(client, 30, expect=429, accept=accept)
            assert refused.headers["content-type"].startswith(accept)
            (error,) = refused.json()["errors"]
            assert "data" not in refused.json()
            assert error["extensions"] == {
                "code": "RATE_LIMITED",
                "cost": _cost(30),
                "limit": 100,
                "window": 86400,
                "remaining": 100 - _cost(22),
                "retryAfter": int(refused.headers["retry-after"]),
            }
            assert refused.headers["ratelimit-remaining"] == str(100 - _cost(22))
            assert refused.headers["ratelimit-limit"] == "100"
            # Until 2 * 30 + 6 - 50 units come back, 864 s each.
            assert 0 < int(refused.headers["retry-after"]) <= 16 * 864
            assert int(refused.headers["ratelimit-reset"]) <= 50 * 864
        # A refusal spends nothing: what is left still fits.
        assert _remaining(await _page(client, 22)) == 0


async def test_an_operation_over_the_whole_budget_is_too_complex(settings: Settings) -> None:
    async with lifespan_client(create_app(limited(settings, "100/24h"))) as client:
        refused = await _page(client, 50, accept=GRAPHQL_RESPONSE, expect=400)
        (error,) = refused.json()["errors"]
        assert error["extensions"] == {
            "code": "QUERY_TOO_COMPLEX",
            "limit": "cost per 86400s",
            "measured": _cost(50),
            "maximum": 100,
        }
        assert _remaining(await _page(client, 1)) == 100 - _cost(1)


async def test_a_refused_operation_never_runs(
    settings: Settings, connections: Connections, call: Caller
) -> None:
    (before,) = await counters_by_report(redis=connections.redis, report_ids=[3])
    async with lifespan_client(create_app(limited(settings, "10/24h"))) as client:
        for expected in (200, 429):
            response = await client.post(
                "/graphql", json={"query": VIEW, "variables": {"id": REPORT_ID}}
            )
            assert response.status_code == expected, response.text
    (after,) = await counters_by_report(redis=connections.redis, report_ids=[3])
    assert after is not None
    assert after.views == (before.views if before else 0) + 1


async def test_cache_hits_spend_nothing(settings: Settings) -> None:
    cached = limited(settings, "1000/24h", response_cache=True)
    async with lifespan_client(create_app(cached)) as client:
        missed = await _page(client, 5)
        hit = await _page(client, 5)
        assert (missed.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
        assert _remaining(missed) == 1000 - _cost(5)
        assert "ratelimit-remaining" not in hit.headers
        assert _remaining(await _page(client, 6)) == 1000 - _cost(5) - _cost(6)


async def test_a_websocket_operation_over_the_budget_gets_an_error(
    settings: Settings, call: Caller
) -> None:
    async with serving(create_app(limited(settings, "100/24h"))) as address:
        async with websocket(address, init={}) as socket:
            await socket.subscribe("1", PAGE, {"n": 40})
            assert (await socket.receive())["type"] == "next"
            assert await socket.receive() == {"id": "1", "type": "complete"}
            await socket.subscribe("2", PAGE, {"n": 10})
            refused = await socket.receive()
            assert (refused["type"], refused["id"]) == ("error", "2")
            assert refused["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
            assert refused["payload"][0]["extensions"]["remaining"] == 100 - _cost(40)
            # The connection stays open, and what still fits runs: a subscription here.
            await socket.subscribe("3", STATS, {"id": REPORT_ID})
            assert (await socket.receive())["type"] == "next"
        async with websocket(address, protocol=LEGACY, init={}) as socket:
            start = {"query": PAGE, "variables": {"n": 10}}
            await socket.send({"id": "4", "type": "start", "payload": start})
            refused = await socket.receive()
            assert (refused["type"], refused["id"]) == ("error", "4")
            assert refused["payload"]["extensions"]["code"] == "RATE_LIMITED"


async def test_with_redis_stopped_operations_pass_and_it_is_logged_once(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with own_redis(limited(settings, "100/24h"), tmp_path / "own") as (own_settings, own):
        async with lifespan_client(create_app(own_settings)) as client:
            assert _remaining(await _page(client, 22)) == 100 - _cost(22)
            own.stop()
            with caplog.at_level(logging.INFO, logger="gateway.rate_limits"):
                for _ in range(4):
                    passed = await _page(client, 22)
                    assert "ratelimit-remaining" not in passed.headers
            outages = [r for r in caplog.records if r.name == "gateway.rate_limits"]
            assert [r.getMessage().split(" (")[0] for r in outages] == [
                "rate limits are not enforced while Redis is unavailable"
            ]


async def test_after_redis_failed_one_operation_at_a_time_tries_it_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = asyncio.Event()
    tries: list[int] = []

    async def on_a_stopped_redis(**arguments: Any) -> Spending:
        stopped = Redis.from_url("redis://127.0.0.1:1/0")
        try:
            return await spend(**{**arguments, "redis": stopped})
        finally:
            await stopped.aclose()

    async def hung_until_answered(**arguments: Any) -> Spending:
        tries.append(arguments["cost"])
        await answer.wait()
        return await spend(**arguments)

    monkeypatch.setattr("core.outages.RETRY_AFTER", 0.0)  # tried again at once
    monkeypatch.setattr("gateway.rate_limits.spend", on_a_stopped_redis)
    async with lifespan_client(create_app(limited(settings, "100/24h"))) as client:
        assert "ratelimit-remaining" not in (await _page(client, 2)).headers  # found down
        monkeypatch.setattr("gateway.rate_limits.spend", hung_until_answered)
        pages = [asyncio.create_task(_page(client, 2)) for _ in range(10)]

        async def all_but_the_probe_answered() -> bool:
            return sum(page.done() for page in pages) == 9

        await eventually(all_but_the_probe_answered)
        assert tries == [_cost(2)]
        answer.set()
        answered = await asyncio.gather(*pages)
        assert sum("ratelimit-remaining" in page.headers for page in answered) == 1
        assert "ratelimit-remaining" in (await _page(client, 2)).headers  # enforced again


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_RATE_LIMIT", "20000 a minute"),
        ("GATEWAY_RATE_LIMIT", "0/60s"),
        ("GATEWAY_RATE_LIMITS_BY_ROLE", json.dumps({"owner": "0"})),
        ("GATEWAY_RATE_LIMITS_BY_ROLE", json.dumps({"editor": "100/60"})),
        ("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal"),
    ],
)
def test_a_bad_rate_limit_setting_is_named_at_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert cli.main(["serve"]) == 2
    assert f"{variable}: " in capsys.readouterr().err


def test_rate_limits_are_read_per_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_RATE_LIMIT", "20000/1m")
    monkeypatch.setenv("GATEWAY_RATE_LIMITS_BY_ROLE", '{"admin": "0", "editor": "5/h"}')
    budgets = Settings().rate_limit_budgets()
    assert {role: (b.units, b.seconds) if b else None for role, b in budgets.items()} == {
        "anonymous": (20000, 60),
        "reader": (20000, 60),
        "editor": (5, 3600),
        "admin": None,
    }
    monkeypatch.delenv("GATEWAY_RATE_LIMIT")
    monkeypatch.delenv("GATEWAY_RATE_LIMITS_BY_ROLE")
    assert set(Settings().rate_limit_budgets().values()) == {None}
