"""TLS to the stores, against the same stores without it, in one run.

One PostgreSQL 15 cluster of the distribution's with TLS on, one Redis 7 of the
distribution's listening on a plain port and on a TLS port, both on a certificate made for
the run, and the embedded MongoDB-protocol server of the data directory (which offers no
TLS). The catalogue is seeded once; then one gateway process at a time is served, as

- ``plain``: ``sslmode=disable`` and ``redis://``;
- ``tls``: ``sslmode=verify-full`` and ``rediss://``, each checking the certificate;

and driven by wrk with C connections on three workloads: the relational nested query over
100 reports (response cache off), the nested query with its documents and counters
(nested+stores, cache off), and the nested query answered from Redis (the cache's memory
tier off: every answer is a Redis hit). Prints requests per second, p50/p99, the gateway's
CPU per request and how many of its PostgreSQL connections were encrypted; then, per
workload, tls against plain (the median over the rounds, every other one reversed).

    python -m bench.tls [--reports 2000] [--seconds 10] [--clients 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.cpu import own_seconds
from bench.gateway_process import run_command, serving
from bench.installs import InstallError, apt_install, apt_packages
from bench.nested import QUERY as NESTED_WITH_STORES
from bench.peers import GATEWAY_NESTED, GATEWAY_SETTINGS, VARIABLES
from bench.system_postgres import SYSTEM_USER, Cluster, running_cluster
from bench.wrk import load_options, run
from gateway.embedded.process import LOOPBACK, free_port

REDIS_SERVER = Path("/usr/bin/redis-server")
OPENSSL = Path("/usr/bin/openssl")
WORKLOADS = {
    "nested": (GATEWAY_NESTED, GATEWAY_SETTINGS),
    "nested+stores": (NESTED_WITH_STORES, GATEWAY_SETTINGS),
    "redis hits": (
        GATEWAY_NESTED,
        GATEWAY_SETTINGS | {"response_cache": "true", "cache_memory_bytes": "0"},
    ),
}
VARIANTS = ("plain", "tls")
# The gateway's own PostgreSQL connections, and how many of them are encrypted.
ENCRYPTED = (
    "SELECT count(*) FILTER (WHERE s.ssl) || ' of ' || count(*) FROM pg_stat_activity a"
    " JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'catalogue' AND a.pid <> pg_backend_pid()"
)


@dataclass(frozen=True)
class Stores:
    """The URLs of each variant."""

    database: dict[str, str]
    redis: dict[str, str]


@dataclass(frozen=True)
class Result:
    throughput: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float
    encrypted: str


def _certificate(directory: Path) -> Path:
    """A certificate for the loopback address, signed by itself (its own authority), and
    its key, readable by PostgreSQL's account alone, as PostgreSQL wants it."""
    certificate, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        [
            str(OPENSSL), "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", f"/CN={LOOPBACK}", "-addext", f"subjectAltName=IP:{LOOPBACK}",
            "-keyout", str(key), "-out", str(certificate),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    certificate.chmod(0o644)
    owned = directory / "postgres.key"
    shutil.copy(key, owned)
    shutil.chown(owned, SYSTEM_USER, SYSTEM_USER)
    owned.chmod(0o600)
    return certificate


@contextmanager
def _redis(directory: Path, certificate: Path) -> Iterator[tuple[int, int]]:
    """A Redis server on a plain port and on a TLS port: its plain and TLS ports."""
    plain, tls = free_port(), free_port()
    server = subprocess.Popen(
        [
            str(REDIS_SERVER), "--bind", LOOPBACK, "--port", str(plain),
            "--tls-port", str(tls), "--tls-cert-file", str(certificate),
            "--tls-key-file", str(certificate.with_suffix(".key")),
            "--tls-ca-cert-file", str(certificate), "--tls-auth-clients", "no",
            "--dir", str(directory), "--save", "", "--appendonly", "no",
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield plain, tls
    finally:
        server.terminate()
        server.wait(timeout=30)


def _measure(
    data_dir: Path,
    cluster: Cluster,
    *,
    workload: str,
    settings: dict[str, str],
    arguments: argparse.Namespace,
) -> Result:
    query, own = WORKLOADS[workload]
    with serving(data_dir, **own, **settings) as gateway:
        url = f"http://127.0.0.1:{gateway.port}/graphql"
        body = {"query": query, "variables": VARIABLES}
        run(
            url, body, clients=arguments.clients, seconds=min(3.0, arguments.seconds)
        )  # warm up, fill the cache
        process = psutil.Process(gateway.pid)
        before = own_seconds(process)
        load = run(url, body, clients=arguments.clients, seconds=arguments.seconds)
        cpu = own_seconds(process) - before
        encrypted = cluster.query(ENCRYPTED).strip()
    return Result(
        load.throughput,
        load.p50_ms,
        load.p99_ms,
        load.errors,
        1000 * cpu / max(load.requests, 1),
        encrypted,
    )


def main() -> None:
    parser = load_options(__doc__, reports=2000, seconds=10.0, rounds=2, passes_over="the variants")
    arguments = parser.parse_args()
    apt_packages("wrk", "postgresql-15")
    try:
        apt_install({"redis-server": REDIS_SERVER, "openssl": OPENSSL})
    except InstallError as error:
        raise SystemExit(str(error)) from error
    root = Path(tempfile.mkdtemp(prefix="gateway-tls-"))
    # PostgreSQL's account reads the certificate and its key in here.
    root.chmod(0o755)
    try:
        certificate = _certificate(root)
        server_tls = (
            "-c ssl=on",
            f"-c ssl_cert_file={certificate}",
            f"-c ssl_key_file={root / 'postgres.key'}",
        )
        with (
            running_cluster(root / "postgres", *server_tls) as cluster,
            _redis(root, certificate) as (plain_port, tls_port),
        ):
            stores = Stores(
                database={
                    "plain": cluster.url() + "?sslmode=disable",
                    "tls": cluster.url() + f"?sslmode=verify-full&sslrootcert={certificate}",
                },
                redis={
                    "plain": f"redis://{LOOPBACK}:{plain_port}/0",
                    "tls": f"rediss://{LOOPBACK}:{tls_port}/0?ssl_ca_certs={certificate}",
                },
            )
            _compare(root / "data", cluster, stores, arguments)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _compare(
    data_dir: Path, cluster: Cluster, stores: Stores, arguments: argparse.Namespace
) -> None:
    print(f"seeding {arguments.reports} reports", flush=True)
    run_command(
        data_dir, "seed", "--reports", str(arguments.reports), "--no-progress",
        database_url=stores.database["plain"], redis_url=stores.redis["plain"],
    )  # fmt: skip
    print(
        f"\n{arguments.clients} connections, {arguments.seconds:g} s a run\n"
        f"{'round':>5} {'workload':<14} {'variant':<7} {'req/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6} {'CPU ms/req':>10}  encrypted PostgreSQL connections"
    )
    ratios: dict[str, dict[str, list[float]]] = {
        workload: {"throughput": [], "cpu": []} for workload in WORKLOADS
    }
    for number in range(arguments.rounds):
        # Every other round in the reverse order: a drift of the machine's speed during a
        # round favours neither variant.
        order = VARIANTS if number % 2 == 0 else VARIANTS[::-1]
        for workload in WORKLOADS:
            results = {}
            for variant in order:
                settings = {
                    "database_url": stores.database[variant],
                    "redis_url": stores.redis[variant],
                }
                result = _measure(
                    data_dir, cluster, workload=workload, settings=settings, arguments=arguments
                )
                results[variant] = result
                print(
                    f"{number + 1:>5} {workload:<14} {variant:<7} {result.throughput:>8.1f} "
                    f"{result.p50_ms:>8.1f} {result.p99_ms:>8.1f} {result.errors:>6} "
                    f"{result.cpu_ms:>10.2f}  {result.encrypted}",
                    flush=True,
                )
            tls, plain = results["tls"], results["plain"]
            ratios[workload]["throughput"].append(tls.throughput / plain.throughput)
            ratios[workload]["cpu"].append(tls.cpu_ms / plain.cpu_ms)
    print("\ntls against plain, median over the rounds (min-max)")
    for workload, figures in ratios.items():
        print(
            f"{workload:<14} throughput {_median(figures['throughput'])}, "
            f"CPU per request {_median(figures['cpu'])}"
        )


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


if __name__ == "__main__":
    main()
