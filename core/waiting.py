"""Waiting on an event for a bounded time."""

from __future__ import annotations

import asyncio
import contextlib


async def set_within(event: asyncio.Event, seconds: float | None) -> bool:
    """Whether ``event`` is set, after waiting up to ``seconds`` for it (None: for ever).

    A timeout scope, not ``wait_for``: on Python 3.11 wait_for makes a task of every wait,
    and the periodic loops wait every fraction of a second. Only the wait on the event is
    ever cancelled here, never a store call: cancelling a PyMongo or SQLAlchemy operation
    half-way can leave its connection pool stuck.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
