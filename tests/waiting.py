"""Waiting in tests for what happens a moment later (a message through Redis's pub/sub, a
server back up): polled until it holds, with a generous bound, never timed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

POLL = 0.02


async def eventually(
    check: Callable[[], Awaitable[bool]],
    seconds: float = 20.0,
    *,
    instead: Callable[[], object] = lambda: None,
) -> None:
    """Until ``check()`` holds; fails after ``seconds``, naming what ``instead()`` finds then."""
    for _ in range(int(seconds / POLL)):
        if await check():
            return
        await asyncio.sleep(POLL)
    raise AssertionError(f"never held; instead: {instead()!r}")
