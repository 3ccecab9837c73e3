"""Store URLs as hosting platforms and operators hand them out: libpq's options in a
PostgreSQL URL, MySQL's TLS modes, Redis over TLS or a Unix socket."""

from __future__ import annotations

import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.connections import redis_pool
from core.settings import Settings
from datasources import mysql_dialect, postgres_dialect
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


@dataclass(frozen=True)
class Tls:
    """How a URL asks a backend's server for TLS or for none, and how a session tells
    whether it is encrypted and whether its server offers TLS."""

    required: dict[str, str]
    disabled: dict[str, str]
    encrypted: str
    offered: str


TLS = {
    "postgresql": Tls(
        required={"sslmode": "require"},
        disabled={"sslmode": "disable"},
        encrypted="SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        offered="SELECT current_setting('ssl') = 'on'",
    ),
    "mysql": Tls(
        required={"ssl_mode": "REQUIRED"},
        disabled={"ssl_mode": "DISABLED"},
        encrypted="SELECT VARIABLE_VALUE <> '' FROM information_schema.SESSION_STATUS"
        " WHERE VARIABLE_NAME = 'SSL_CIPHER'",
        offered="SELECT @@have_ssl = 'YES'",
    ),
}


def with_options(url: str, **options: str) -> str:
    """``url``, written as a platform writes it (no driver), with ``options``."""
    parsed = make_url(url)
    return (
        parsed.set(drivername=parsed.get_backend_name())
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


@pytest.mark.skipif(BACKEND not in TLS, reason="SQLite has no server to encrypt for")
async def test_a_url_that_requires_tls_gets_it_or_no_connection(database_url: str) -> None:
    """``sslmode=require`` (PostgreSQL) or ``ssl_mode=REQUIRED`` (MySQL) gets an encrypted
    connection where the server offers TLS, and no connection where it does not: nothing
    goes in the clear. Disabled, TLS is never used. (Continuous integration runs the suite
    on servers that offer TLS.)"""
    tls = TLS[BACKEND]

    def engine(options: dict[str, str]) -> AsyncEngine:
        return relational_engine(driven_url(with_options(database_url, **options)), timeout=5)

    assert await _first_row(engine(tls.disabled), tls.encrypted) == (False,)
    (offered,) = await _first_row(engine(tls.disabled), tls.offered)
    if offered:
        assert await _first_row(engine(tls.required), tls.encrypted) == (True,)
    else:
        with pytest.raises((ConnectionError, OperationalError)):
            await _first_row(engine(tls.required), tls.encrypted)


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


def test_libpq_options_the_driver_cannot_keep_are_refused_and_harmless_ones_left() -> None:
    url = make_url("postgresql+asyncpg://gateway@db.example/catalogue?sslmode=require")
    left = url.update_query_dict({"keepalives_idle": "30", "channel_binding": "prefer"})
    assert postgres_dialect.connection(left, 5)[1]["dsn"] == "postgresql://?sslmode=require"
    for refused, reason in (
        ({"channel_binding": "require"}, "channel_binding=require: not supported"),
        ({"require_auth": "scram-sha-256"}, "require_auth: not supported"),
        ({"sslmode": "required"}, "sslmode='required': one of disable, allow, prefer"),
        ({"sslrootcert": "system"}, "sslrootcert=system: sslmode=require checks less"),
    ):
        with pytest.raises(ValueError, match=reason):
            postgres_dialect.connection(url.update_query_dict(refused), 5)
    # libpq 16's word for the system's authorities, which asyncpg reads as a file's name.
    system = url.update_query_dict({"sslmode": "verify-full", "sslrootcert": "system"})
    read, arguments = postgres_dialect.connection(system, 5)
    assert arguments["ssl"].verify_mode is ssl.CERT_REQUIRED
    assert arguments["ssl"].check_hostname
    assert "dsn" not in arguments
    assert dict(read.query) == {}


def test_mysql_tls_modes_are_read_as_mysql_reads_them() -> None:
    url = make_url("mysql+asyncmy://gateway@db.example/catalogue?charset=utf8mb4")
    required = url.update_query_dict({"ssl-mode": "REQUIRED"})
    read, arguments = mysql_dialect.connection(required, timeout=5)
    assert dict(read.query) == {"charset": "utf8mb4"}
    # Encrypted, the certificate unchecked: nothing to check it against.
    assert arguments["ssl"].verify_mode is ssl.CERT_NONE
    verified = url.update_query_dict({"ssl_mode": "verify_identity"})
    context = mysql_dialect.connection(verified, timeout=5)[1]["ssl"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    # Disabled, nothing of TLS is left for the driver, a cipher list included.
    disabled = url.update_query_dict({"ssl_mode": "DISABLED", "ssl_cipher": "AES128-SHA"})
    read, arguments = mysql_dialect.connection(disabled, 5)
    assert "ssl" not in arguments
    assert dict(read.query) == {"charset": "utf8mb4"}
    ciphered = url.update_query_dict(
        {"ssl-mode": "VERIFY_CA", "ssl-cipher": "ECDHE-ECDSA-AES128-GCM-SHA256"}
    )
    offered = {
        cipher["name"] for cipher in mysql_dialect.connection(ciphered, 5)[1]["ssl"].get_ciphers()
    }
    assert "ECDHE-ECDSA-AES128-GCM-SHA256" in offered
    assert "ECDHE-RSA-AES256-GCM-SHA384" not in offered
    # Without a mode, the client's spelling of SQLAlchemy's options is SQLAlchemy's.
    hyphened = url.update_query_dict({"ssl-ca": "/etc/ssl/db-ca.pem"})
    assert mysql_dialect.connection(hyphened, 5)[0].query["ssl_ca"] == "/etc/ssl/db-ca.pem"
    with pytest.raises(ValueError, match="ssl_check_hostname: ssl_mode says"):
        mysql_dialect.connection(verified.update_query_dict({"ssl_check_hostname": "false"}), 5)


def test_a_url_whose_options_cannot_be_read_is_refused_with_the_settings() -> None:
    with pytest.raises(ValueError, match="connect_timeout='soon' is not a number of seconds"):
        Settings(database_url="postgres://gateway@db.example/catalogue?connect_timeout=soon")
    # MySQL's client would fall back to no TLS where the server offers none; the driver
    # cannot.
    with pytest.raises(ValueError, match="ssl_mode=PREFERRED: the driver cannot fall back"):
        Settings(database_url="mysql://gateway@db.example/catalogue?ssl-mode=PREFERRED")


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


def test_connections_over_tls_share_one_context_per_set_of_options() -> None:
    """Made for each connection, as the driver does, a context loaded the system's
    certificate authorities again: ten times the processor time of the rest of a new
    connection over TLS."""

    def context(url: str) -> object:
        connection = redis_pool(url, timeout=5, traced=False).make_connection()
        assert isinstance(connection, SSLConnection)
        return connection.ssl_context

    first = context("rediss://cache.example:6380/0")
    assert context("rediss://cache.example:6380/0") is first
    assert context("rediss://cache.example:6380/1") is first
    assert context("rediss://cache.example:6380/0?ssl_cert_reqs=none") is not first
