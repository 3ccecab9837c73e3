"""The gateway's Prometheus metrics, declared in one place (``/metrics`` serves them; see
README.md, *Metrics, traces and logs*).

Everything recorded per request or per store call goes through a labelled child looked up
once and kept (``labels()`` costs more than the increment itself), and nothing is recorded
per field. What is a process's state rather than an event (pools, circuits, the response
cache's counters, subscriptions) is read into the gauges and counters here when they are
scraped, or every second by each worker of ``serve --workers`` (gateway/metrics.py).

Under ``serve --workers`` every process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR``, which the supervisor sets up, and a scrape adds them up:
each gauge says how (``livesum``: the sum over the live workers; ``livemin``: the lowest).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from prometheus_client import Counter, Gauge, Histogram

# Seconds, from a cached answer to an operation at its deadline.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
)  # fmt: skip
# Keys in one batch call: a page holds at most 100 rows, a level of nested pages 100 by 100.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10_000)
# A checkout that waited longer than this is a wait: every connection in use, or a new one
# being opened. Shorter ones, nearly all of them, cost no more than two clock readings.
WAIT_THRESHOLD = 0.001
WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUESTS = Counter(
    "gateway_requests",
    "GraphQL requests over HTTP (cache hits answered before parsing included), and queries"
    " and mutations over WebSocket (execution websocket)",
    ["operation", "outcome", "execution"],
)
REQUEST_SECONDS = Histogram(
    "gateway_request_duration_seconds",
    "Seconds from a GraphQL request's arrival at the endpoint to its response",
    ["operation", "outcome", "execution"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter("gateway_errors", "Errors in GraphQL responses, over HTTP and WebSocket", ["code"])
ROUND_TRIPS = Counter(
    "gateway_store_round_trips", "Round trips to each store made by operations", ["store"]
)
BATCH_SIZES = Histogram(
    "gateway_batch_size",
    "Keys per batch call of a source",
    ["store", "source"],
    buckets=BATCH_BUCKETS,
)
POOL_WAITS = Histogram(
    "gateway_pool_wait_seconds",
    "Checkouts of a pooled connection that waited over a millisecond, by store",
    ["store"],
    buckets=WAIT_BUCKETS,
)
POOL_IN_USE = Gauge(
    "gateway_pool_connections_in_use",
    "Pooled connections checked out",
    ["store"],
    multiprocess_mode="livesum",
)
POOL_LIMIT = Gauge(
    "gateway_pool_connections_max",
    "Most connections a pool holds",
    ["store"],
    multiprocess_mode="livesum",
)
STORE_UP = Gauge(
    "gateway_store_up",
    "1 while a store's circuit is closed, 0 while it is open (its fields fail at once)",
    ["store"],
    multiprocess_mode="livemin",
)
CACHE_HITS = Counter("gateway_response_cache_hits", "Response cache hits", ["tier"])
CACHE_MISSES = Counter("gateway_response_cache_misses", "Response cache misses")
CACHE_STORED = Counter("gateway_response_cache_stored", "Responses stored in the cache")
CACHE_STORED_BYTES = Counter(
    "gateway_response_cache_stored_bytes", "Bytes of responses stored in the cache"
)
CACHE_INVALIDATIONS = Counter(
    "gateway_response_cache_invalidations", "Invalidations of cache tags made by this gateway"
)
CACHE_SINGLE_FLIGHT_WAITS = Counter(
    "gateway_response_cache_single_flight_waits",
    "Cache misses that waited for a concurrent identical one instead of executing",
)
PERSISTED_QUERIES = Counter(
    "gateway_persisted_queries",
    "Persisted-query look-ups and registrations, by result",
    ["result"],
)
SUBSCRIPTIONS = Counter(
    "gateway_subscriptions",
    "Subscriptions asked for, by operation, transport and outcome: ok (fed) or rejected",
    ["operation", "transport", "outcome"],
)
FEEDS = Gauge(
    "gateway_subscription_feeds",
    "Subscription feeds running (one per operation, variables and role)",
    multiprocess_mode="livesum",
)
SUBSCRIBERS = Gauge(
    "gateway_subscribers", "Subscribers of the running feeds", multiprocess_mode="livesum"
)


@cache
def batch_size(store: str, source: str) -> Callable[[float], None]:
    """Where one source's batch sizes go; sources are a fixed table, so this stays small."""
    return BATCH_SIZES.labels(store, source).observe


@cache
def pool_waited(store: str) -> Callable[[float], None]:
    return POOL_WAITS.labels(store).observe
