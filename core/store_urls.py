"""Where the stores are: known before any driver is loaded, by the processes that need no
driver (the embedded servers' watchdog)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoreUrls:
    """Where the stores are; None for a store the gateway is to start itself."""

    database_url: str | None = None
    mongo_url: str | None = None
    redis_url: str | None = None
