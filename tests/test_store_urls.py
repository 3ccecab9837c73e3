"""Store URLs as hosting platforms and operators hand them out: libpq's options in a
PostgreSQL URL; Redis over TLS or a Unix socket."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.connections import redis_pool
from core.settings import Settings
from datasources import postgres_dialect
from datasources.dialects import driven_url, relational_engine
from datasources.instrumentation import CommandNoting, RoundTripCounting
from gateway.app import create_app
from gateway.embedded.valkey import ValkeyServer
from tests.clients import Seeded, lifespan_client
from tests.databases import BACKEND
from tests.test_round_trips import NESTED
from tests.waiting import eventually

postgres_only = pytest.mark.skipif(
    BACKEND != "postgresql", reason="libpq's options are PostgreSQL's"
)

ENCRYPTED = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def with_options(url: str, **options: str) -> str:
    """``url``, written as a platform writes it (``postgres://``), with ``options``."""
    return (
        make_url(url)
        .set(drivername="postgres")
        .update_query_dict(options)
        .render_as_string(hide_password=False)
    )


async def _first_row(engine: AsyncEngine, statement: str) -> tuple[object, ...]:
    try:
        async with engine.connect() as connection:
            return tuple((await connection.execute(text(statement))).one())
    finally:
        await engine.dispose()


@postgres_only
async def test_libpq_options_of_the_url_reach_the_server(database_url: str) -> None:
    url = with_options(
        database_url,
        application_name="catalogue-api",
        options="-c statement_timeout=4321",
        connect_timeout="7",
        target_session_attrs="read-write",
    )
    engine = relational_engine(driven_url(url), timeout=5)
    settings = await _first_row(
        engine, "SELECT current_setting('application_name'), current_setting('statement_timeout')"
    )
    assert settings == ("catalogue-api", "4321ms")


@postgres_only
async def test_a_url_that_requires_tls_gets_it_or_no_connection(database_url: str) -> None:
    """``sslmode=require`` gets an encrypted connection where the server offers TLS, and no
    connection where it does not: nothing goes in the clear. ``sslmode=disable`` never
    encrypts. (The suite runs on a server that offers TLS in continuous integration.)"""

    def engine(sslmode: str) -> AsyncEngine:
        return relational_engine(driven_url(with_options(database_url, sslmode=sslmode)), timeout=5)

    assert await _first_row(engine("disable"), ENCRYPTED) == (False,)
    (offered,) = await _first_row(engine("prefer"), "SHOW ssl")
    if offered == "on":
        assert await _first_row(engine("require"), ENCRYPTED) == (True,)
    else:
        with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
            await _first_row(engine("require"), ENCRYPTED)


def test_the_options_asyncpg_refuses_as_arguments_are_handed_over_as_libpq_reads_them() -> None:
    url = make_url(
        "postgresql+asyncpg://gateway@db.example/catalogue?host=db1.example:5432&host=db2.example:5432"
        "&sslmode=verify-full&sslrootcert=/etc/ssl/root.crt&application_name=api&connect_timeout=3"
    )
    read, arguments = postgres_dialect.connection(url, timeout=5)
    assert dict(read.query) == {"host": ("db1.example:5432", "db2.example:5432")}
    assert arguments["dsn"] == (
        "postgresql://?sslmode=verify-full&sslrootcert=%2Fetc%2Fssl%2Froot.crt&application_name=api"
    )
    assert arguments["timeout"] == 3
    # As libpq, no limit of the URL's own: the store timeout's.
    _, unlimited = postgres_dialect.connection(url.update_query_dict({"connect_timeout": "0"}), 5)
    assert unlimited["timeout"] == 5


def test_a_url_whose_options_cannot_be_read_is_refused_with_the_settings() -> None:
    with pytest.raises(ValueError, match="connect_timeout='soon' is not a number of seconds"):
        Settings(database_url="postgres://gateway@db.example/catalogue?connect_timeout=soon")


@pytest.fixture
def unix_socket_valkey() -> Iterator[Path]:
    """A Valkey server that listens on a Unix socket only. Its path is short: a socket's
    path has room for about a hundred bytes."""
    with tempfile.TemporaryDirectory(prefix="valkey-") as directory:
        socket = Path(directory) / "valkey.sock"
        command = [
            str(ValkeyServer(Path(directory)).binary),
            "--port", "0",
            "--unixsocket", str(socket),
            "--unixsocketperm", "700",
            "--dir", directory,
            "--save", "",
        ]  # fmt: skip
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield socket
        finally:
            server.kill()
            server.wait()


@pytest.mark.servers_of_its_own
async def test_round_trips_to_redis_on_a_unix_socket_are_counted(
    seeded: Seeded, unix_socket_valkey: Path
) -> None:
    """The scheme of a Redis URL chooses how the driver connects; the gateway's count of
    round trips is kept whichever it chooses."""
    url = f"unix://{unix_socket_valkey}?db=0"
    probe = Redis.from_url(url)

    async def listening() -> bool:
        try:
            return bool(await probe.ping())
        except (RedisConnectionError, FileNotFoundError):
            return False

    try:
        await eventually(listening)
    finally:
        await probe.aclose()
    over_tcp = await seeded.query(NESTED, {"first": 10}, **{"x-gateway-round-trips": "1"})
    on_the_socket = seeded.settings.model_copy(update={"redis_url": url})
    async with lifespan_client(create_app(on_the_socket)) as client:
        answers = [
            await client.post(
                "/graphql",
                json={"query": NESTED, "variables": {"first": 10}},
                headers={"x-gateway-round-trips": "1"},
            )
            for _ in range(2)
        ]
    trips = over_tcp["extensions"]["roundTrips"]
    assert trips["redis"] > 0
    # The first request of a new process also reads what the process keeps afterwards.
    assert answers[-1].json()["extensions"]["roundTrips"] == trips


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
def test_connections_over_tls_are_counted_and_noted_as_any(traced: bool) -> None:
    """Continuous integration runs the suite on a Redis server over TLS, where the counts
    of round trips are checked; here, the connection the pool makes for ``rediss://``."""
    pool = redis_pool("rediss://cache.example:6380/2", timeout=5, traced=traced)
    assert issubclass(pool.connection_class, SSLConnection)
    assert issubclass(pool.connection_class, RoundTripCounting)
    assert issubclass(pool.connection_class, CommandNoting) is traced
    assert pool.connection_kwargs["db"] == 2
