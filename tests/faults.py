"""Faults a test injects on purpose: a store call held half-way, a store that stops."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.settings import Settings
from core.store_urls import StoreUrls
from gateway.embedded import EmbeddedStores


class HeldStoreCall:
    """A store call injected in place of a real one: it starts, then answers ``value``
    when ``release`` is set; ``events`` says what it did."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.events: list[str] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, **_: Any) -> Any:
        self.events.append("started")
        self.started.set()
        await self.release.wait()
        self.events.append("finished")
        return self.value


@contextmanager
def own_redis(settings: Settings, directory: Path) -> Iterator[tuple[Settings, EmbeddedStores]]:
    """``settings`` with a Redis server of their own, which the caller may stop."""
    wanted = StoreUrls(settings.database_url, settings.mongo_url, None)
    with EmbeddedStores(directory, wanted) as own:
        urls = own.start()
        yield settings.model_copy(update={"redis_url": urls.redis_url, "store_timeout": 1.0}), own
