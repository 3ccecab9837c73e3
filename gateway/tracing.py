"""Traces, exported over OTLP/HTTP while ``GATEWAY_OTLP_ENDPOINT`` is set: the SDK's
tracer provider, its batching processor and exporter are made then, and only then (see
core/telemetry.py for the spans themselves).

A request's trace: its span (``POST /graphql``), within it ``parse`` and ``validate`` (for
a document met for the first time), ``execute`` and ``encode``; within ``execute``, a
``plan level`` and a ``fetch level`` span per level of the planned executor, and a span
per store call, with its statements or commands. Every span carries the request id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core import __version__, telemetry
from core.settings import Settings


@asynccontextmanager
async def exported(settings: Settings) -> AsyncIterator[None]:
    """Trace while the block runs, if an endpoint is set; then send what is left."""
    if settings.otlp_endpoint is None:
        yield
        return
    # The SDK and its exporter take about a tenth of a second to import: only a gateway
    # that traces pays it, not every worker and command.
    from gateway.trace_export import provider_for  # noqa: PLC0415

    provider = provider_for(settings.otlp_endpoint)
    telemetry.use(provider.get_tracer("gateway", __version__))
    try:
        yield
    finally:
        telemetry.use(None)
        # The last batch is sent over HTTP: not on the event loop.
        await asyncio.to_thread(provider.shutdown)
