"""The gateway against PostGraphile 4 and 5 on the same PostgreSQL 15 database, in one run.

Starts a PostgreSQL 15 cluster of the distribution's on a free port, seeds it with
`gateway seed` (MongoDB and Redis stay embedded in the gateway's data directory), then
serves it with each server in turn, one process each, and sends each the same query
shapes written in its own schema's naming:

- nested: 100 reports by publication date, newest first, with their type, their authors
  (primary flag, name, institution) and technologies: bench/nested.py's query without
  its MongoDB and Redis fields, and without `primaryAuthor`, which PostGraphile has no
  field for (the authors' primary flag carries it);
- nested+stores: bench/nested.py's query as it is (the gateway only);
- wide: 100 technologies (the seed has 49), 100 reports each with their authors' names:
  about 32,000 objects. The gateway orders a technology's reports by publication date,
  PostGraphile by its link table's primary key: ordering by a linked table's column needs
  a plugin, and the rows' number and shape are what this query is about.

While the gateway (one process) is served, its embedded MongoDB-protocol server is also
driven alone (bench/document_store.py): the nested+stores query's `find` of its reports'
documents, sent straight to it by as many connections, gives the ceiling on that query's
throughput that the document store sets, whatever serves the query.

The gateway runs a second time as `serve --workers 2` (gateway-2-workers), for the
nested queries: its CPU per request against one process's, its throughput against one
process's, and each worker's share of the work (of the CPU the workers spent). And a
third time with no limit on the operations it executes at once (gateway-unlimited), for
the same queries: what GATEWAY_MAX_CONCURRENT_OPERATIONS is worth in throughput, CPU per
request and p99.

For each server and query: requests per second and wrk's p50/p99 latency with C
connections, one request's latency alone (median of sequential requests), and the CPU a
request costs the server's process (its workers', with workers), PostgreSQL and the
gateway's embedded MongoDB-protocol and Redis servers (stores CPU). Every
server's nested answer is checked against the same rows read straight from the database.
A run lasts --seconds, or longer (up to two minutes) for a query that takes long alone: a
few answers on every connection. Installs wrk, PostgreSQL 15 and the PostGraphile packages
(Node 22 for version 5) when they are missing.

With --rounds R the servers are measured R times over, every other pass in the reverse
order; each ratio is computed within a pass (side by side) and its median over the passes
is printed with its range. The machine's speed drifts by a fifth within minutes: a single
pass can favour whichever server ran in a fast moment.

    python -m bench.peers [--reports 10000] [--seconds 20] [--clients 32] [--rounds 1]
                          [--only gateway|gateway-2-workers|gateway-unlimited|postgraphile4|
                                  postgraphile5]
                          [--keep] [--data-dir D]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil

from bench import wrk
from bench.cpu import own_seconds
from bench.document_store import Ceiling, ceiling
from bench.gateway_process import run_command, serving
from bench.installs import apt_packages, npm_folder
from bench.nested import QUERY as NESTED_WITH_STORES
from bench.postgraphile_process import serving_postgraphile
from bench.system_postgres import Cluster, running_cluster
from gateway.embedded.process import log_tail
from gateway.embedded.stores import ENDPOINTS_FILE
from gateway.worker_process import WORKER_NAME

GATEWAY_NESTED = """
query Nested($first: Int!) {
  reports(first: $first, orderBy: {field: PUBLICATION_DATE, direction: DESC}) {
    totalCount
    edges { node {
      databaseId title publicationDate status wordCount
      type { name }
      authors { isPrimary author { name institution { name location } } }
      technologies { name version }
    } }
  }
}
"""

GATEWAY_WIDE = """
query Wide($first: Int!) {
  technologies(first: $first) {
    edges { node {
      name version
      reports(first: $first) {
        edges { node { title wordCount status authors { author { name } } } }
      }
    } }
  }
}
"""

# PostGraphile 4 and 5 (its default preset) name the schema alike, but for the row's id
# column (`id` in 4; `rowId` in 5, where `id` is the global one). Version 5 orders only by
# indexed columns, so the authors come in their link table's order in both.
POSTGRAPHILE_NESTED = """
query Nested($first: Int!) {
  allReports(first: $first, orderBy: [PUBLICATION_DATE_DESC, <id-order>]) {
    totalCount
    edges { node {
      <id> title publicationDate status wordCount
      reportTypeByReportTypeId { name }
      reportAuthorsByReportId {
        nodes {
          isPrimaryAuthor
          authorByAuthorId { name institutionByInstitutionId { name location } }
        }
      }
      reportTechnologiesByReportId { nodes { technologyByTechnologyId { name version } } }
    } }
  }
}
"""

POSTGRAPHILE_WIDE = """
query Wide($first: Int!) {
  allTechnologies(first: $first, orderBy: [NAME_ASC, VERSION_ASC]) {
    edges { node {
      name version
      reportTechnologiesByTechnologyId(first: $first) {
        edges { node { reportByReportId {
          title wordCount status
          reportAuthorsByReportId { nodes { authorByAuthorId { name } } }
        } } }
      }
    } }
  }
}
"""

# The nested query's rows as every server must answer them: report id, title, and its
# authors' names, sorted, in the order of the list.
REFERENCE_SQL = """
SELECT json_agg(json_build_array(r.id, r.title, (
  SELECT coalesce(json_agg(a.name), '[]'::json)
  FROM report_authors ra JOIN authors a ON a.id = ra.author_id WHERE ra.report_id = r.id
)) ORDER BY r.sort_key DESC, r.id DESC)
FROM (
  SELECT id, title, coalesce(publication_date, '0001-01-01') AS sort_key FROM reports
  ORDER BY sort_key DESC, id DESC LIMIT 100
) r
"""

Rows = list[tuple[int, str, tuple[str, ...]]]

SERVERS = (
    "gateway",
    "gateway-2-workers",
    "gateway-unlimited",
    "postgraphile4",
    "postgraphile5",
)
# What the embedded MongoDB-protocol and Redis servers' command lines contain.
MONGO_COMMAND = "nx_27017"
EMBEDDED_COMMANDS = (MONGO_COMMAND, "valkey")
# The reports whose documents the nested+stores query reads.
NESTED_REPORT_IDS = "{ reports(first: 100) { edges { node { databaseId } } } }"
VARIABLES = {"first": 100}
WARM_UP_SECONDS = 3.0
# One request alone: this many after two unmeasured ones, or as many as fit this time.
ALONE_REQUESTS = 30
ALONE_SECONDS = 10.0
IDLE_TIMEOUT = 180.0
# A run long enough for every connection to see a few answers: a server that takes a
# second a request alone takes C seconds a request under C connections, and a run of
# --seconds would end before the first one.
ROUNDS = 3
LONGEST_RUN = 120.0
# The wide query costs more than the default limit allows, and under 32 clients it can
# take longer than the default deadline: the benchmark measures it, not the limits.
# Execution is what is compared: no answer comes from the response cache (bench/cache.py
# measures it).
GATEWAY_SETTINGS = {
    "counter_snapshot_interval": "0",
    "max_cost": "100000000",
    "execution_timeout": "600",
    "response_cache": "false",
}
# gateway-unlimited: as many operations at once as there are connections.
UNLIMITED = {"max_concurrent_operations": "100000"}


def _gateway_rows(data: dict[str, Any]) -> Rows:
    return [
        (
            int(node["databaseId"]),
            node["title"],
            tuple(sorted(a["author"]["name"] for a in node["authors"])),
        )
        for node in (edge["node"] for edge in data["reports"]["edges"])
    ]


def _postgraphile_rows(data: dict[str, Any], row_id: str) -> Rows:
    return [
        (
            int(node[row_id]),
            node["title"],
            tuple(
                sorted(
                    a["authorByAuthorId"]["name"] for a in node["reportAuthorsByReportId"]["nodes"]
                )
            ),
        )
        for node in (edge["node"] for edge in data["allReports"]["edges"])
    ]


@dataclass(frozen=True)
class Server:
    name: str
    queries: dict[str, str]
    rows: Callable[[dict[str, Any]], Rows]


GATEWAY = Server(
    "gateway",
    {"nested": GATEWAY_NESTED, "nested+stores": NESTED_WITH_STORES, "wide": GATEWAY_WIDE},
    _gateway_rows,
)
# `serve --workers 2`: the CPU a request costs is the workers', each worker's share of it
# is printed, and its throughput is compared with one process's.
GATEWAY_WORKERS = Server(
    "gateway-2-workers",
    {"nested": GATEWAY_NESTED, "nested+stores": NESTED_WITH_STORES},
    _gateway_rows,
)
# With no limit on the operations it executes at once: what the limit is worth.
GATEWAY_UNLIMITED = Server(
    "gateway-unlimited",
    {"nested": GATEWAY_NESTED, "nested+stores": NESTED_WITH_STORES},
    _gateway_rows,
)
VARIANTS = (GATEWAY, GATEWAY_WORKERS, GATEWAY_UNLIMITED)


def _postgraphile(version: int) -> Server:
    row_id, order = ("id", "ID_DESC") if version == 4 else ("rowId", "ROW_ID_DESC")
    nested = POSTGRAPHILE_NESTED.replace("<id-order>", order).replace("<id>", row_id)
    return Server(
        f"postgraphile{version}",
        {"nested": nested, "wide": POSTGRAPHILE_WIDE},
        lambda data: _postgraphile_rows(data, row_id),
    )


@dataclass(frozen=True)
class Result:
    server: str
    query: str
    objects: int
    matches: bool | None
    load: wrk.Load
    alone_ms: float
    cpu_ms: float | None
    postgres_cpu_ms: float | None
    # The gateway's embedded MongoDB-protocol and Redis servers'.
    embedded_cpu_ms: float | None
    # Each worker's part of the server's CPU, for a gateway with workers.
    shares: tuple[float, ...] = ()
    # Which pass over the servers measured it (see --rounds).
    round: int = 0


def _count_objects(value: object) -> int:
    if isinstance(value, dict):
        return 1 + sum(_count_objects(item) for item in value.values())
    if isinstance(value, list):
        return sum(_count_objects(item) for item in value)
    return 0


def _ask(client: httpx.Client, query: str) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": VARIABLES})
    body: dict[str, Any] = response.json()
    if response.status_code != 200 or body.get("errors") or not body.get("data"):
        raise RuntimeError(f"{response.status_code}: {json.dumps(body)[:2000]}")
    data: dict[str, Any] = body["data"]
    return data


def _alone_ms(client: httpx.Client, query: str) -> float:
    for _ in range(2):
        _ask(client, query)
    latencies: list[float] = []
    deadline = time.perf_counter() + ALONE_SECONDS
    while len(latencies) < ALONE_REQUESTS and (
        len(latencies) < 3 or time.perf_counter() < deadline
    ):
        started = time.perf_counter()
        _ask(client, query)
        latencies.append(time.perf_counter() - started)
    return statistics.median(latencies) * 1000


def _cpu_seconds(pid: int) -> float:
    """The server's CPU: its own, or its workers' where it has them."""
    return sum(_worker_cpu(pid).values()) or own_seconds(psutil.Process(pid))


def _worker_cpu(pid: int) -> dict[int, float]:
    """The CPU of each worker of a gateway with ``--workers`` (none for one process)."""
    found: dict[int, float] = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.name() == WORKER_NAME:
                found[child.pid] = own_seconds(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _embedded(pid: int, commands: tuple[str, ...]) -> list[psutil.Process]:
    """The store servers a gateway embeds whose command line names one of ``commands``."""
    found: list[psutil.Process] = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if any(command in " ".join(child.cmdline()) for command in commands):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _embedded_cpu(pid: int) -> dict[int, float]:
    """The CPU of each store server a gateway embeds (none for a peer)."""
    found: dict[int, float] = {}
    for server in _embedded(pid, EMBEDDED_COMMANDS):
        try:
            found[server.pid] = own_seconds(server)
        except psutil.NoSuchProcess:
            continue
    return found


def _document_store_alone(
    port: int, pid: int, data_dir: Path, arguments: argparse.Namespace
) -> Ceiling:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
        edges = _ask(client, NESTED_REPORT_IDS)["reports"]["edges"]
    urls = json.loads((data_dir / "gateway" / ENDPOINTS_FILE).read_text())
    (server,) = _embedded(pid, (MONGO_COMMAND,))
    found = ceiling(
        urls["mongo_url"],
        server,
        [edge["node"]["databaseId"] for edge in edges],
        clients=arguments.clients,
        seconds=arguments.seconds,
    )
    print(
        f"      the document store alone, {arguments.clients} connections sending "
        f"nested+stores' find: {found.finds_per_second:.1f} finds/s, "
        f"{found.cpu_ms_per_find:.2f} ms of its CPU a find",
        flush=True,
    )
    return found


def _wait_until_idle(pid: int, cluster: Cluster) -> None:
    """Waits for the server and PostgreSQL to finish the requests that wrk abandoned when
    its run ended, so that their work does not count against the next run."""
    deadline = time.monotonic() + IDLE_TIMEOUT
    before = _cpu_seconds(pid) + cluster.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _cpu_seconds(pid) + cluster.cpu_seconds()
        if now - before < 0.02:
            return
        before = now


def _measure(
    server: Server,
    query_name: str,
    *,
    port: int,
    pid: int,
    cluster: Cluster,
    reference: Rows,
    arguments: argparse.Namespace,
    number: int,
) -> Result:
    query = server.queries[query_name]
    url = f"http://127.0.0.1:{port}/graphql"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
        data = _ask(client, query)
        alone = _alone_ms(client, query)
    matches = server.rows(data) == reference if query_name == "nested" else None
    body = {"query": query, "variables": VARIABLES}
    wrk.run(url, body, clients=arguments.clients, seconds=min(WARM_UP_SECONDS, arguments.seconds))
    _wait_until_idle(pid, cluster)
    cpu, postgres_cpu, workers = _cpu_seconds(pid), cluster.cpu_seconds(), _worker_cpu(pid)
    embedded = _embedded_cpu(pid)
    seconds = max(arguments.seconds, min(LONGEST_RUN, ROUNDS * arguments.clients * alone / 1000))
    load = wrk.run(url, body, clients=arguments.clients, seconds=seconds)
    cpu, postgres_cpu = _cpu_seconds(pid) - cpu, cluster.cpu_seconds() - postgres_cpu
    embedded = {
        server: _embedded_cpu(pid).get(server, spent) - spent for server, spent in embedded.items()
    }
    worked = {
        worker: spent - workers[worker]
        for worker, spent in _worker_cpu(pid).items()
        if worker in workers
    }
    _wait_until_idle(pid, cluster)
    per_request = 1000 / load.requests if load.requests else None
    result = Result(
        server.name,
        query_name,
        _count_objects(data),
        matches,
        load,
        alone,
        cpu * per_request if per_request else None,
        postgres_cpu * per_request if per_request else None,
        sum(embedded.values()) * per_request if per_request and embedded else None,
        tuple(spent / cpu for spent in worked.values()) if cpu > 0 else (),
        number,
    )
    print(_row(result), flush=True)
    return result


class Served(Protocol):
    @property
    def port(self) -> int: ...
    @property
    def pid(self) -> int: ...


@contextmanager
def _served(name: str, data_dir: Path, cluster: Cluster) -> Iterator[tuple[int, int]]:
    """(port, pid) of server ``name`` over the cluster's database."""
    served: AbstractContextManager[Served]
    if name.startswith("gateway"):
        log = data_dir / "gateway" / "bench-gateway.log"
        database_url = cluster.url("postgresql+asyncpg")
        workers = "2" if name == GATEWAY_WORKERS.name else "1"
        limit = UNLIMITED if name == GATEWAY_UNLIMITED.name else {}
        served = serving(
            data_dir / "gateway",
            workers=workers,
            database_url=database_url,
            **GATEWAY_SETTINGS,
            **limit,
        )
    else:
        log = data_dir / f"{name}.log"
        served = serving_postgraphile(int(name[-1]), cluster.url(), log)
    started = False
    try:
        with served as process:
            started = True
            yield process.port, process.pid
    except (SystemExit, RuntimeError):
        # The data directory may be gone by the time anyone looks for the log.
        if not started:
            print(f"{name} did not start; the end of its log:\n{log_tail(log)}", file=sys.stderr)
        raise


def _seed(data_dir: Path, cluster: Cluster, reports: int) -> None:
    marker = data_dir / "seeded-reports"
    if marker.exists():
        if int(marker.read_text()) != reports:
            raise SystemExit(f"{data_dir} holds {marker.read_text()} reports, not {reports}")
        return
    print(f"seeding {reports} reports", flush=True)
    started = time.perf_counter()
    run_command(
        data_dir / "gateway",
        *("seed", "--reports", str(reports), "--no-progress"),
        database_url=cluster.url("postgresql+asyncpg"),
        **GATEWAY_SETTINGS,
    )
    # Fresh statistics, so that every server's statements are planned on the same ones.
    cluster.query("VACUUM ANALYZE")
    marker.write_text(str(reports))
    print(f"seeded in {time.perf_counter() - started:.0f} s", flush=True)


def _reference(cluster: Cluster) -> Rows:
    rows: list[list[Any]] = json.loads(cluster.query(REFERENCE_SQL))
    return [(int(id_), title, tuple(sorted(names))) for id_, title, names in rows]


HEADER = (
    f"{'round':>5} {'server':<18} {'query':<14} {'objects':>7} {'rows':>5} {'run s':>5} "
    f"{'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'alone ms':>8} {'CPU ms/req':>10} "
    f"{'PG CPU ms/req':>13} {'stores CPU ms/req':>17}"
)


def _optional(value: float | None, width: int) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'-':>{width}}"


def _row(result: Result) -> str:
    rows = {None: "-", True: "same", False: "DIFF"}[result.matches]
    load = result.load
    return (
        f"{result.round + 1:>5} {result.server:<18} {result.query:<14} {result.objects:>7} "
        f"{rows:>5} "
        f"{load.seconds:>5.0f} {load.throughput:>8.1f} {load.p50_ms:>8.1f} {load.p99_ms:>8.1f} "
        f"{load.errors:>6} "
        f"{result.alone_ms:>8.1f} {_optional(result.cpu_ms, 10)} "
        f"{_optional(result.postgres_cpu_ms, 13)} {_optional(result.embedded_cpu_ms, 17)}"
    )


# (label, the gateway's query, the peers' query, metric, whether higher is better)
METRICS: list[tuple[str, str, str, Callable[[Result], float | None], bool]] = [
    ("throughput, nested", "nested", "nested", lambda r: r.load.throughput, True),
    (
        "throughput, nested+stores / peer's nested",
        "nested+stores",
        "nested",
        lambda r: r.load.throughput,
        True,
    ),
    ("p99 latency, nested", "nested", "nested", lambda r: r.load.p99_ms, False),
    ("one request alone, nested", "nested", "nested", lambda r: r.alone_ms, False),
    ("one request alone, wide (~32k objects)", "wide", "wide", lambda r: r.alone_ms, False),
    ("CPU per nested request", "nested", "nested", lambda r: r.cpu_ms, False),
]


def _find(results: list[Result], server: str, query: str) -> Result | None:
    return next((r for r in results if r.server == server and r.query == query), None)


def _against_peer(
    results: list[Result],
    ours_query: str,
    peers_query: str,
    metric: Callable[[Result], float | None],
    higher_is_better: bool,
) -> tuple[float, str] | None:
    """The gateway's figure over the faster peer's, in one round, and that peer."""
    gateway = _find(results, GATEWAY.name, ours_query)
    peers = [
        (r.server, value)
        for r in results
        if not r.server.startswith(GATEWAY.name) and r.query == peers_query and (value := metric(r))
    ]
    ours = metric(gateway) if gateway else None
    if not ours or not peers:
        return None
    choose = max if higher_is_better else min
    peer, theirs = choose(peers, key=lambda pair: pair[1])
    return ours / theirs, peer


def _spread(values: list[float]) -> str:
    """The median of per-round figures, with their range when there are several."""
    middle = f"{statistics.median(values):>8.3f}"
    return middle if len(values) == 1 else f"{middle}  ({min(values):.3f}-{max(values):.3f})"


def _ratios(results: list[Result], ceilings: dict[int, Ceiling]) -> None:
    """Every ratio computed within each round (servers measured side by side), then the
    median over the rounds: the machine's speed drifts between rounds, not within a
    ratio."""
    rounds = [
        [r for r in results if r.round == number] for number in sorted({r.round for r in results})
    ]
    several = f", median of {len(rounds)} rounds (range)" if len(rounds) > 1 else ""
    print(f"\ngateway / faster peer{several}")
    for label, ours_query, peers_query, metric, higher_is_better in METRICS:
        found = [
            ratio
            for measured in rounds
            if (ratio := _against_peer(measured, ours_query, peers_query, metric, higher_is_better))
        ]
        if not found:
            continue
        values = [value for value, _ in found]
        median = statistics.median(values)
        better = median if higher_is_better else 1 / median
        verdict = f"{better:.2f}x better" if better >= 1 else f"{1 / better:.2f}x worse"
        peers = "/".join(sorted({peer for _, peer in found}))
        print(f"  {label:<42} {_spread(values)}  ({peers}; the gateway is {verdict})")
    _against_ceiling(rounds, ceilings, several)
    _against_variant(rounds, GATEWAY_WORKERS, GATEWAY, "one process", several)
    _against_variant(rounds, GATEWAY, GATEWAY_UNLIMITED, GATEWAY_UNLIMITED.name, several)


def _against_ceiling(
    rounds: list[list[Result]], ceilings: dict[int, Ceiling], several: str
) -> None:
    """The gateway's nested+stores throughput over what its document store serves alone,
    within each round."""
    found = [
        (ours.load.throughput, ceilings[ours.round])
        for measured in rounds
        if (ours := _find(measured, GATEWAY.name, "nested+stores")) and ours.round in ceilings
    ]
    if not found:
        return
    print(f"\nthe document store alone (its find of nested+stores' documents){several}")
    print(f"  finds/s {_spread([store.finds_per_second for _, store in found])}")
    print(f"  its CPU ms a find {_spread([store.cpu_ms_per_find for _, store in found])}")
    used = [throughput / store.finds_per_second for throughput, store in found]
    print(f"  gateway's nested+stores req/s / its finds/s {_spread(used)}")
    over_peer = [
        ceilings[measured[0].round].finds_per_second / fastest
        for measured in rounds
        if measured[0].round in ceilings
        and (fastest := max(_peer_throughputs(measured, "nested"), default=0.0))
    ]
    if over_peer:
        print(f"  its finds/s / the faster peer's nested req/s {_spread(over_peer)}")


def _peer_throughputs(measured: list[Result], query: str) -> list[float]:
    return [
        r.load.throughput
        for r in measured
        if not r.server.startswith(GATEWAY.name) and r.query == query
    ]


def _against_variant(
    rounds: list[list[Result]], variant: Server, base: Server, base_label: str, several: str
) -> None:
    """``variant``'s figures over ``base``'s, for each query both ran, within each round."""
    for query in ("nested", "nested+stores"):
        pairs = [
            (ours, theirs)
            for measured in rounds
            if (ours := _find(measured, variant.name, query))
            and (theirs := _find(measured, base.name, query))
        ]
        if not pairs:
            continue
        print(f"\n{variant.name} / {base_label}, {query}{several}")
        throughput = [ours.load.throughput / theirs.load.throughput for ours, theirs in pairs]
        print(f"  throughput {_spread(throughput)}")
        cpu = [
            ours.cpu_ms / theirs.cpu_ms for ours, theirs in pairs if ours.cpu_ms and theirs.cpu_ms
        ]
        if cpu:
            print(f"  CPU per request {_spread(cpu)}")
        p99 = [ours.load.p99_ms / theirs.load.p99_ms for ours, theirs in pairs]
        print(f"  p99 latency {_spread(p99)}")
        for ours, _ in pairs:
            if ours.shares:
                shares = ", ".join(f"{share:.0%}" for share in ours.shares)
                print(f"  each worker's share of the CPU, round {ours.round + 1}: {shares}")


def _stop_on_sigterm() -> None:
    # SIGTERM ends the run like Ctrl-C does: through every `finally` that stops a server.
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def main() -> None:
    parser = wrk.load_options(
        __doc__,
        reports=10_000,
        seconds=20.0,
        rounds=1,
        passes_over="the servers; ratios are per pass",
    )
    parser.add_argument("--only", choices=SERVERS, action="append", help="repeatable")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--data-dir", type=Path, help="a directory kept by an earlier --keep")
    arguments = parser.parse_args()
    _stop_on_sigterm()
    chosen = [name for name in SERVERS if name in (arguments.only or SERVERS)]
    gateways = {server.name: server for server in VARIANTS}
    servers = [gateways.get(name) or _postgraphile(int(name[-1])) for name in chosen]

    apt_packages()
    for server in servers:
        if server.name not in gateways:
            npm_folder(f"v{server.name[-1]}")

    data_dir: Path = arguments.data_dir or Path(tempfile.mkdtemp(prefix="gateway-peers-"))
    # The cluster inside runs as PostgreSQL's own account, which must reach it.
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o755)
    results: list[Result] = []
    ceilings: dict[int, Ceiling] = {}
    try:
        with running_cluster(data_dir / "postgres") as cluster:
            _seed(data_dir, cluster, arguments.reports)
            reference = _reference(cluster)
            print(
                f"\n{arguments.reports} reports; {arguments.clients} connections, "
                f"{arguments.seconds:.0f} s a run\n{HEADER}",
                flush=True,
            )
            for number in range(arguments.rounds):
                # Every other round in the reverse order, so that a drift of the machine's
                # speed during a round favours no server.
                for server in servers if number % 2 == 0 else servers[::-1]:
                    with _served(server.name, data_dir, cluster) as (port, pid):
                        for query in server.queries:
                            result = _measure(
                                server,
                                query,
                                port=port,
                                pid=pid,
                                cluster=cluster,
                                reference=reference,
                                arguments=arguments,
                                number=number,
                            )
                            results.append(result)
                        if server is GATEWAY:
                            ceilings[number] = _document_store_alone(port, pid, data_dir, arguments)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if arguments.keep or arguments.data_dir:
            print(f"data kept in {data_dir} (--data-dir {data_dir} to use it again)")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"\n{HEADER}")
    for result in results:
        print(_row(result))
    print(
        "objects: JSON objects in one answer; rows: the nested answer against the database; "
        "alone: median of sequential requests;\nCPU: the server's process; PG CPU: "
        "PostgreSQL's server and backends; stores CPU: the gateway's embedded MongoDB-protocol\n"
        "and Redis servers; all per request completed under load"
    )
    _ratios(results, ceilings)


if __name__ == "__main__":
    main()
