"""``/metrics`` as Prometheus scrapes it, read with prometheus-client's own parser: the
metrics move as requests are served, on one process and added up over workers."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from typing import Any

import httpx
import pytest

from core.metrics import REQUESTS
from core.telemetry import current_request_id
from datasources.instrumentation import command_names
from gateway.app import create_app
from gateway.logs import JSONLines, RequestIds
from gateway.metrics import OTHER, RequestMetrics, Served
from tests import processes
from tests.clients import Seeded, lifespan_client
from tests.processes import LOOPBACK, READY_TIMEOUT, wait_for
from tests.scraped import Samples, samples, total, value

data_dir = processes.data_dir
launch = processes.launch

CATALOGUE = """
query Catalogue {
  reports(first: 3) { edges { node { title document { tags } stats { views } } } }
}
"""


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_requests_move_their_counters_histogram_round_trips_and_batches(
    seeded: Seeded,
) -> None:
    before = await scrape(seeded.client)
    for _ in range(3):
        response = await seeded.client.post(
            "/graphql", json={"query": CATALOGUE}, headers={"cache-control": "no-cache"}
        )
        assert "errors" not in response.json()
    after = await scrape(seeded.client)

    labels = {"operation": "Catalogue", "outcome": "ok", "execution": "planner"}
    assert value(after, "gateway_requests_total", **labels) - value(
        before, "gateway_requests_total", **labels
    ) == pytest.approx(3)
    seconds = "gateway_request_duration_seconds"
    assert value(after, f"{seconds}_count", **labels) - value(
        before, f"{seconds}_count", **labels
    ) == pytest.approx(3)
    assert value(after, f"{seconds}_sum", **labels) > value(before, f"{seconds}_sum", **labels)
    assert value(after, f"{seconds}_bucket", **labels, le="+Inf") == value(
        after, f"{seconds}_count", **labels
    )
    for store in ("postgres", "mongodb", "redis"):
        round_trips = "gateway_store_round_trips_total"
        assert value(after, round_trips, store=store) >= value(before, round_trips, store=store) + 3
        assert value(after, "gateway_store_up", store=store) == 1
        assert value(after, "gateway_pool_connections_max", store=store) > 0
    # The documents of three reports, in one batch of three keys each time.
    documents = {"store": "mongodb"}
    batches = total(after, "gateway_batch_size_count", **documents) - total(
        before, "gateway_batch_size_count", **documents
    )
    keys = total(after, "gateway_batch_size_sum", **documents) - total(
        before, "gateway_batch_size_sum", **documents
    )
    assert (batches, keys) == (3, 9)


async def test_errors_are_counted_by_code_and_refusals_by_outcome(seeded: Seeded) -> None:
    before = await scrape(seeded.client)
    invalid = await seeded.client.post("/graphql", json={"query": "query Broken { nope }"})
    assert invalid.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    unnamed = await seeded.client.post(
        "/graphql", json={"query": "{ service { name } }"}, headers={"cache-control": "no-cache"}
    )
    assert "errors" not in unnamed.json()
    after = await scrape(seeded.client)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("gateway_errors_total", code="BAD_USER_INPUT") == 1
    # A document that does not validate is refused before any operation of it is read.
    assert grew("gateway_requests_total", operation="none", outcome="rejected") == 1
    assert grew("gateway_requests_total", operation="anonymous", outcome="ok") == 1


async def test_cache_hits_are_counted_before_the_endpoint_and_by_the_cache(
    seeded: Seeded,
) -> None:
    # A document of its own: nothing cached it before.
    query = f"query Cached {{ service {{ name }} }} # {uuid.uuid4().hex}"
    before = await scrape(seeded.client)
    first = await seeded.client.post("/graphql", json={"query": query})
    second = await seeded.client.post("/graphql", json={"query": query})
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    after = await scrape(seeded.client)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("gateway_requests_total", operation="Cached", execution="planner") == 1
    # Answered before anything was parsed: no operation name to give.
    assert grew("gateway_requests_total", operation="none", execution="cache") == 1
    assert grew("gateway_response_cache_hits_total") == 1
    assert grew("gateway_response_cache_misses_total") == 1
    assert grew("gateway_response_cache_stored_total") == 1


async def test_persisted_queries_are_counted(seeded: Seeded) -> None:
    document = f"query Persisted {{ service {{ name }} }} # {uuid.uuid4().hex}"
    digest = hashlib.sha256(document.encode()).hexdigest()
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    before = await scrape(seeded.client)
    missing = await seeded.client.post("/graphql", json={"extensions": extensions})
    assert missing.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    await seeded.client.post("/graphql", json={"query": document, "extensions": extensions})
    found = await seeded.client.post(
        "/graphql", json={"extensions": extensions}, headers={"cache-control": "no-cache"}
    )
    assert found.json()["data"] == {"service": {"name": "polyglot-gateway"}}
    after = await scrape(seeded.client)

    def grew(result: str) -> float:
        name = "gateway_persisted_queries_total"
        return value(after, name, result=result) - value(before, name, result=result)

    assert (grew("not_found"), grew("registered"), grew("found")) == (1, 1, 1)


def test_operation_names_past_the_limit_are_other() -> None:
    metrics = RequestMetrics(max_operations=2)
    labels = [metrics.operation_label(name) for name in ("A", "B", "C", "A", "", None)]
    assert labels == ["A", "B", OTHER, "A", "anonymous", "none"]
    assert metrics.operation_label("x" * 500) == OTHER


def test_recording_a_request_looks_its_labels_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the endpoint adds to every request is an increment and an observation: the
    labelled children (``labels()`` costs more than both) are looked up at the first one."""
    looked_up: list[tuple[str, ...]] = []
    labels = REQUESTS.labels

    def counting(*values: str) -> Any:
        looked_up.append(values)
        return labels(*values)

    monkeypatch.setattr(REQUESTS, "labels", counting)
    recorded = RequestMetrics(max_operations=10)
    for _ in range(100):
        recorded.record(Served(operation="Counted"), 0.004)
    assert looked_up == [("Counted", "ok", "none")]


def test_redis_command_names_are_read_from_the_protocol() -> None:
    packed = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*3\r\n$4\r\nhset\r\n$1\r\nh\r\n$3\r\n\r\n\r\n"
    assert command_names(packed) == ["GET", "HSET"]


def test_json_log_lines_carry_the_request_id_and_extra_fields() -> None:
    record = logging.LogRecord(
        "gateway.slow", logging.WARNING, __file__, 1, "slow %s", ("A",), None
    )
    record.cost = 12
    token = current_request_id.set("req-42")
    try:
        assert RequestIds().filter(record)
    finally:
        current_request_id.reset(token)
    line = json.loads(JSONLines().format(record))
    assert line["message"] == "slow A"
    assert (line["request_id"], line["cost"], line["level"]) == ("req-42", 12, "WARNING")


async def test_a_slow_operation_is_logged_with_its_cost_and_round_trips(
    seeded: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    settings = seeded.settings.model_copy(update={"slow_operation_seconds": 1e-9})
    async with lifespan_client(create_app(settings)) as client:
        with caplog.at_level(logging.WARNING, logger="gateway.slow"):
            response = await client.post(
                "/graphql",
                json={"query": CATALOGUE},
                headers={"cache-control": "no-cache", "x-request-id": "slow-1"},
            )
    assert "errors" not in response.json()
    [record] = [record for record in caplog.records if record.name == "gateway.slow"]
    assert record.operation == "Catalogue"  # type: ignore[attr-defined]
    assert record.cost > 0  # type: ignore[attr-defined]
    assert record.round_trips["mongodb"] == 1  # type: ignore[attr-defined]
    assert "slow-1" in record.getMessage()


@pytest.fixture
def metrics_directory(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("metrics")
    (directory / "counter_1.db").write_bytes(b"left by an earlier run")
    return str(directory)


def test_workers_add_up_their_metrics_whichever_one_is_scraped(
    launch: processes.Launch, metrics_directory: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", metrics_directory)
    gateway = launch("gateway.log", "--workers", "2")
    base = f"http://127.0.0.1:{gateway.port}"
    wait_for(
        lambda: gateway.log.read_text().count("Application startup complete.") >= 2,
        "both workers",
        READY_TIMEOUT,
    )
    requests = 40
    for index in range(requests):
        # Each on a connection of its own, so that both workers serve some.
        response = LOOPBACK.post(
            f"{base}/graphql",
            json={"query": f"query Spread{index % 2} {{ service {{ name }} }}"},
            headers={"cache-control": "no-cache"},
        )
        assert response.status_code == 200

    def scraped() -> Samples:
        return samples(LOOPBACK.get(f"{base}/metrics").text)

    # Every scrape, whichever worker answers it, adds up both workers' counts.
    for _ in range(6):
        found = scraped()
        assert total(found, "gateway_requests_total", outcome="ok") == requests
        assert value(found, "gateway_requests_total", operation="Spread1", outcome="ok",
                     execution="planner") == requests / 2  # fmt: skip
    # Each worker writes its pools every second: both show once they have.
    wait_for(
        lambda: value(scraped(), "gateway_pool_connections_max", store="postgres") == 2 * 20,
        "both workers' pools",
    )
