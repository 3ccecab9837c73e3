"""The OpenTelemetry SDK's tracer provider, batching processor and OTLP/HTTP exporter, for a
gateway given an endpoint (see gateway/tracing.py)."""

from __future__ import annotations

from opentelemetry.context import Context as TraceContext
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from core import SERVICE_NAME, __version__, telemetry

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
