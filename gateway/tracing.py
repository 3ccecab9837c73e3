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

from opentelemetry.context import Context as TraceContext
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from core import __version__, telemetry
from core.settings import Settings

SERVICE_NAME = "polyglot-gateway"
TRACES_PATH = "/v1/traces"


class RequestIds(SpanProcessor):
    """Every span started while a request is served carries its id."""

    def on_start(self, span: Span, parent_context: TraceContext | None = None) -> None:
        request_id = telemetry.current_request_id.get()
        if request_id is not None:
            span.set_attribute(telemetry.REQUEST_ID, request_id)


def provider_for(endpoint: str) -> TracerProvider:
    """Spans batched and sent to ``endpoint``'s traces path. ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` add to what the resource says, as everywhere."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE_NAME, "service.version": __version__})
    )
    provider.add_span_processor(RequestIds())
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + TRACES_PATH)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


@asynccontextmanager
async def exported(settings: Settings) -> AsyncIterator[None]:
    """Trace while the block runs, if an endpoint is set; then send what is left."""
    if settings.otlp_endpoint is None:
        yield
        return
    provider = provider_for(settings.otlp_endpoint)
    telemetry.use(provider.get_tracer("gateway", __version__))
    try:
        yield
    finally:
        telemetry.use(None)
        # The last batch is sent over HTTP: not on the event loop.
        await asyncio.to_thread(provider.shutdown)
