"""Where the stores are: known before any driver is loaded, by the processes that need no
driver (the embedded servers' watchdog)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class StoreUrls:
    """Where the stores are; None for a store the gateway is to start itself."""

    database_url: str | None = None
    mongo_url: str | None = None
    redis_url: str | None = None


def server_address(url: str) -> str:
    """Where the server of ``url`` is, for an operator's log: its hosts and ports, or its
    file or socket; never its credentials."""
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        # SQLAlchemy's form: a third slash, then the file's path.
        return unquote(parts.path[1:])
    # PostgreSQL's hosts, where a URL names several, are options (libpq's form).
    hosts = parse_qs(parts.query).get("host") or [parts.netloc.rpartition("@")[2]]
    return ",".join(host for host in hosts if host) or unquote(parts.path)


SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
REDIS_SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class SentinelUrl:
    """A Redis service whose master the sentinels name, and follow through failovers.

    ``redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/service[/db]``,
    with ``?sentinel_username=...&sentinel_password=...`` where the sentinels themselves
    ask for a password. The credentials before ``@`` are the master's.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def sentinel_url(url: str) -> SentinelUrl | None:
    """What ``url`` names, if it is a Sentinel URL; None for any other Redis URL.

    Raises ValueError, saying what is wrong, for a Sentinel URL that names no service or
    has a malformed address, database or option."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() != SENTINEL_SCHEME:
        return None
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    credentials, _, hosts = netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    service, _, database = path.strip("/").partition("/")
    if not service:
        raise ValueError(
            f"a {SENTINEL_SCHEME} URL names its service: {SENTINEL_SCHEME}://host/service"
        )
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - set(_SENTINEL_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown option {', '.join(unknown)} in a {SENTINEL_SCHEME} URL; "
            f"it takes {' and '.join(_SENTINEL_OPTIONS)}"
        )
    return SentinelUrl(
        sentinels=tuple(_address(host) for host in hosts.split(",")),
        service=unquote(service),
        db=_database(database),
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_username=options.get("sentinel_username", [None])[-1] or None,
        sentinel_password=options.get("sentinel_password", [None])[-1] or None,
    )


def _address(host: str) -> tuple[str, int]:
    if host.startswith("["):
        name, _, after = host[1:].partition("]")
        port = after.removeprefix(":")
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:
        name, port = host, ""
    if not name:
        raise ValueError(f"a sentinel without a host in a {SENTINEL_SCHEME} URL")
    if not port:
        return name, SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{port!r} is not a port, in a {SENTINEL_SCHEME} URL")
    return name, int(port)


def _database(database: str) -> int:
    if not database:
        return 0
    if not database.isdigit():
        raise ValueError(f"{database!r} is not a database number, in a {SENTINEL_SCHEME} URL")
    return int(database)
