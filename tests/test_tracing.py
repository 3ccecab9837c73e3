"""Traces as an OTLP collector receives them: a request's nested spans, sent over OTLP/HTTP
to a receiver this test runs, which decodes them with opentelemetry-proto."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from core import telemetry
from core.connections import Connections
from core.settings import Settings
from gateway.app import create_app
from gateway.seed import seed
from tests.clients import lifespan_client

CATALOGUE = """
query Catalogue {
  reports(first: 3) { edges { node { title authors { author { name } } document { tags }
                                      stats { views } } } }
}
"""


class Collector:
    """The spans received, as dicts: name, ids, parent, attributes."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()

    def receive(self, path: str, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self._lock:
            self.paths.append(path)
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(
                        {
                            "name": span.name,
                            "trace": span.trace_id.hex(),
                            "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex() or None,
                            "attributes": _attributes(span.attributes),
                            "service": resource.get("service.name"),
                        }
                        for span in scope_spans.spans
                    )


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    """An OTLP/HTTP receiver on a free loopback port, and its address."""
    received = Collector()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.receive(self.path, body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_request_reaches_the_collector_as_nested_spans(
    settings: Settings, connections: Connections, collector: tuple[Collector, str]
) -> None:
    received, endpoint = collector
    await seed(connections, reports=5, progress=False)
    traced = settings.model_copy(update={"otlp_endpoint": endpoint})
    async with lifespan_client(create_app(traced)) as client:
        assert telemetry.tracer is not None
        response = await client.post(
            "/graphql",
            json={"query": CATALOGUE},
            headers={"x-request-id": "traced-1", "cache-control": "no-cache"},
        )
        assert "errors" not in response.json()
    # The lifespan's end sent what was left.
    assert telemetry.tracer is None
    assert set(received.paths) == {"/v1/traces"}

    spans = [
        span
        for span in received.spans
        if span["attributes"].get(telemetry.REQUEST_ID) == "traced-1"
    ]
    [root] = [span for span in spans if span["parent"] is None]
    assert root["name"] == "POST /graphql"
    assert root["service"] == "polyglot-gateway"
    assert root["attributes"]["graphql.operation.name"] == "Catalogue"
    assert root["attributes"]["gateway.execution"] == "planner"
    assert root["attributes"]["http.response.status_code"] == 200
    # One trace, and every span of it carries the request id.
    assert {span["trace"] for span in received.spans} == {root["trace"]}
    assert len(spans) == len(received.spans)

    by_id = {span["id"]: span for span in spans}

    def ancestry(span: dict[str, Any]) -> list[str]:
        names = []
        while span["parent"] is not None:
            span = by_id[span["parent"]]
            names.append(span["name"])
        return names

    named = {span["name"]: span for span in spans}
    for phase in ("parse", "validate", "execute", "encode"):
        assert ancestry(named[phase]) == ["POST /graphql"], phase
    levels = [span for span in spans if span["name"] == "fetch level"]
    depths = [span["attributes"]["gateway.level"] for span in levels]
    assert depths == list(range(1, len(depths) + 1))
    assert len(depths) >= 3
    assert ancestry(named["plan level"]) == ["execute", "POST /graphql"]

    stores = [span for span in spans if "db.system.name" in span["attributes"]]
    assert {span["attributes"]["db.system.name"] for span in stores} == {
        "postgresql",
        "mongodb",
        "redis",
    }
    for span in stores:
        assert ancestry(span) == ["fetch level", "execute", "POST /graphql"], span["name"]
        assert span["attributes"]["db.query.text"], span["name"]
    statements = " ".join(
        span["attributes"]["db.query.text"]
        for span in stores
        if span["attributes"]["db.system.name"] == "postgresql"
    )
    assert "SELECT" in statements
    assert "reports" in statements
    [documents] = [span for span in stores if span["attributes"]["db.system.name"] == "mongodb"]
    assert documents["attributes"]["db.query.text"].split()[0] in ("find", "aggregate")
    assert documents["attributes"]["gateway.batch.keys"] == 3
    [counters] = [span for span in stores if span["attributes"]["db.system.name"] == "redis"]
    assert counters["attributes"]["db.query.text"]


async def test_no_tracer_and_no_span_without_an_endpoint(settings: Settings) -> None:
    async with lifespan_client(create_app(settings)) as client:
        assert telemetry.tracer is None
        with telemetry.span("parse") as span:
            assert span is None
        response = await client.post("/graphql", json={"query": "{ service { name } }"})
        assert response.status_code == 200


def test_a_gateway_that_does_not_trace_does_not_load_the_sdk() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, gateway.app; print(*sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "gateway.app" in loaded
    assert not [
        module
        for module in loaded
        if module.startswith(("opentelemetry.exporter", "opentelemetry.sdk.trace"))
    ]
