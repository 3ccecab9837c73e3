"""When the cycle collector runs in the gateway's processes.

A pass of the collector stops the whole process for as long as it walks the generations
it collects: every request and every subscriber's delivery waits. What the gateway does
per operation is freed by reference counting (tests/test_garbage.py), so the collector's
passes are what costs, and their length is the number of objects they walk:

- Start-up's objects (the schema, the plans, the modules) are moved out of its sight.
- The thresholds let it run rarely on its own: a response allocates thousands of
  short-lived objects, and at the default threshold (700) it ran every few hundred of
  them. Measured on the nested benchmark query (32 connections): 33 req/s with the
  defaults, 48 with the start-up objects frozen, 58 frozen and with these thresholds.
- But the collector counts allocations net of frees. Under a steady churn, such as
  5,000 subscribers each replacing what it waits on at every event, the count stays
  under any threshold while the young generation grows by thousands of objects a
  second; after tens of seconds, one pass over it paused the process for 120-170 ms. So
  the young generation is also collected every ``YOUNG_EVERY`` seconds, when it holds
  what a tenth of a second allocated (a few milliseconds with 5,000 subscribers). Only
  while subscriptions are fed, though: requests' objects live no longer than their
  request and are freed by reference counting, so a process that only answers requests
  has no such churn, and the schedule cost it 3% of its CPU under load. The older
  generations are left to the thresholds: what reaches them is either alive, so a pass
  would free nothing, or garbage in cycles, which counts towards the threshold until one
  runs.

Before all that, importing the application makes some 250,000 objects that live as long
as the process: the modules, the schema, the models. At the default thresholds the
collector runs hundreds of times while they are made, a few of them over everything made
so far, and frees nothing: a fifth of the processor time of a start (``python -m
bench.startup``). So the gateway's programs import with it off, and freeze what the
imports made.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from core.waiting import set_within

# The programs import this module before the application, to import it with frozen_imports.
if TYPE_CHECKING:
    from gateway.live import Feeds

THRESHOLDS = (50_000, 20, 100)
YOUNG_EVERY = 0.1


@contextmanager
def frozen_imports() -> Iterator[None]:
    """Run the block with the collector off, then move what it made out of the collector's
    sight, and turn the collector back on if it was on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def tune_garbage_collector() -> None:
    """Move everything start-up made out of the collector's sight, and let it run rarely."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


async def collect_young_generation(stop: asyncio.Event, feeds: Feeds) -> None:
    while not await set_within(stop, YOUNG_EVERY):
        if feeds.running:
            gc.collect(0)
