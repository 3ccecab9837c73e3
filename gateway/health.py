"""Liveness (the process answers) and readiness (every store answers in time)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from core.connections import Connections
from core.stores import completed_within
from datasources.health import ping_mongo, ping_postgres, ping_redis


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    connections: Connections = request.app.state.connections
    timeout: float = request.app.state.settings.readiness_timeout
    checks: dict[str, Callable[[], Awaitable[None]]] = {
        "postgres": lambda: ping_postgres(engine=connections.engine),
        "mongodb": lambda: ping_mongo(client=connections.mongo),
        "redis": lambda: ping_redis(redis=connections.redis),
    }
    outcomes = await asyncio.gather(*(_check(check(), timeout) for check in checks.values()))
    stores = dict(zip(checks, outcomes, strict=True))
    failing = sorted(name for name, outcome in stores.items() if outcome != "ok")
    # Whether requests meet each store's fields failing at once (see core/stores.py).
    circuits = {
        store.value: "open" if circuit.is_open else "closed"
        for store, circuit in connections.circuits.items()
    }
    return JSONResponse(
        {
            "status": "unavailable" if failing else "ready",
            "stores": stores,
            "failing": failing,
            "circuits": circuits,
        },
        status_code=503 if failing else 200,
    )


async def _check(probe: Awaitable[None], seconds: float) -> str:
    try:
        await completed_within(probe, seconds)
    except TimeoutError:
        return f"no answer within {seconds:g}s"
    except Exception as error:
        return f"error: {type(error).__name__}"
    return "ok"
