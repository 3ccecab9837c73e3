"""Liveness (the process answers) and readiness (every store answers in time)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from core.connections import Connections
from core.outages import Outage
from core.stores import Store, StoreCalls, completed_within
from datasources.health import ping_mongo, ping_postgres, ping_redis

logger = logging.getLogger(__name__)


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


class Readiness:
    """``/readyz``: whether every store answers in time. The answer names a failure's kind
    only; the log says why, in the driver's words, once when a store starts failing and
    once when it answers again, however often the probe asks."""

    def __init__(self) -> None:
        self._outages = {
            store.value: Outage(
                logger,
                began=f"not ready: {store.value} does not answer",
                ended=f"{store.value} answers the readiness probe again",
            )
            for store in Store
        }

    async def answer(self, request: Request) -> JSONResponse:
        connections: Connections = request.app.state.connections
        timeout: float = request.app.state.settings.readiness_timeout
        checks: dict[Store, Callable[[], Awaitable[None]]] = {
            Store.POSTGRES: lambda: ping_postgres(engine=connections.engine),
            Store.MONGODB: lambda: ping_mongo(client=connections.mongo),
            Store.REDIS: lambda: ping_redis(redis=connections.redis),
        }
        errors = await asyncio.gather(
            *(_check(check(), store, timeout, connections.calls) for store, check in checks.items())
        )
        stores = {}
        for store, error in zip(checks, errors, strict=True):
            if error is None:
                self._outages[store].recovered()
                stores[store] = "ok"
            else:
                self._outages[store].failed(error)
                stores[store] = (
                    str(error)
                    if isinstance(error, TimeoutError)
                    else f"error: {type(error).__name__}"
                )
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


async def _check(
    probe: Awaitable[None], store: Store, seconds: float, calls: StoreCalls
) -> Exception | None:
    try:
        await completed_within(probe, store, seconds, calls)
    except TimeoutError:
        return TimeoutError(f"no answer within {seconds:g}s")
    except Exception as error:
        return error
    return None
