"""Configuration, read once from ``GATEWAY_*`` environment variables and never changed."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.exc import ArgumentError

from core.store_urls import REDIS_SCHEMES, sentinel_url
from datasources.dialects import driven_url
from datasources.models import Role

ENV_PREFIX = "GATEWAY_"
# Values that mark a secret as never having been set by the operator.
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "development-only-secret"})
DEVELOPMENT_SECRET = "development-only-secret"  # noqa: S105 - refused in production


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class SettingsError(ValueError):
    """A configuration that must not be started with."""


# Rate limits apply per role: the callers with no credentials, and each role of a key or token.
RATE_LIMITED_ROLES = ("anonymous", *(role.value for role in Role))
_BUDGET = re.compile(r"(\d+)/(\d*)(s|m|h)")
_SECONDS_PER = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Budget:
    """The cost units a client may spend per window (see gateway/rate_limits.py)."""

    units: int
    seconds: int


def parse_budget(text: str) -> Budget | None:
    """``"20000/60s"`` (or ``/1m``, ``/h``) as a budget; ``"0"`` as None: no limit."""
    text = text.strip()
    if text == "0":
        return None
    match = _BUDGET.fullmatch(text.replace(" ", ""))
    if match is None or int(match[1]) == 0 or int(match[2] or 1) == 0:
        raise SettingsError(
            f"{text!r} is not a rate limit: give cost units per window, as '20000/60s' "
            "(windows in s, m or h), or '0' for no limit"
        )
    return Budget(int(match[1]), int(match[2] or 1) * _SECONDS_PER[match[3]])


def parse_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Comma-separated addresses and CIDR blocks."""
    try:
        return [
            ipaddress.ip_network(entry.strip(), strict=False)
            for entry in text.split(",")
            if entry.strip()
        ]
    except ValueError as error:
        raise SettingsError(
            f"expected addresses or CIDR blocks, comma-separated: {error}"
        ) from error


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    # Unset store URLs mean "start an embedded server for this store".
    database_url: str | None = None
    mongo_url: str | None = None
    mongo_database: str = "gateway"
    redis_url: str | None = None
    data_dir: Path = Path(".gateway-data")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Processes that serve the port; above 1, a parent process supervises them.
    workers: int = Field(default=1, ge=1)
    log_level: str = "info"
    # Keys the hashes of stored API keys; required (and not a placeholder) in production.
    secret_key: SecretStr = SecretStr(DEVELOPMENT_SECRET)
    # How long /readyz waits for each store, and how long a store call may take.
    readiness_timeout: float = Field(default=2.0, gt=0)
    store_timeout: float = Field(default=5.0, gt=0)
    # Bearer tokens: JWTs signed with HS256 and this secret, or with RS256 and the public
    # key in a PEM file or the keys of a JWKS file. API keys need no setting.
    jwt_secret: SecretStr | None = None
    jwt_public_key_file: FilePath | None = None
    jwks_file: FilePath | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # How often counters are copied from Redis to PostgreSQL for ordering by views; 0: never.
    counter_snapshot_interval: float = Field(default=60.0, ge=0)
    # Lets the x-gateway-lookups: naive header turn batching off, for benchmarks only.
    allow_naive_lookups: bool = False
    # Limits checked before an operation runs, on every transport (see gateway/limits.py).
    max_request_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    max_document_bytes: int = Field(default=32 * 1024, gt=0)
    max_tokens: int = Field(default=3000, gt=0)
    max_depth: int = Field(default=12, gt=0)
    max_aliases: int = Field(default=30, ge=0)
    max_root_fields: int = Field(default=20, gt=0)
    max_directives_per_field: int = Field(default=5, ge=0)
    max_cost: int = Field(default=500_000, gt=0)
    # Seconds an operation may run; past it the client gets DEADLINE_EXCEEDED and no
    # further store call starts for it.
    execution_timeout: float = Field(default=15.0, gt=0)
    # Queries over HTTP a process executes at once; the others wait their turn, up to
    # the execution timeout (then 503). A few keep the processor busy while the others
    # wait on nearby stores; more only interleave, each operation's objects pushing the
    # others' out of the processor's caches (see README.md, Limits). Raise it where the
    # stores are far (their round trips, not the gateway's CPU, are then most of an
    # operation's time).
    max_concurrent_operations: int = Field(default=4, gt=0)
    # Seconds Redis keeps a persisted query's document after it was registered.
    persisted_query_ttl: int = Field(default=7 * 24 * 3600, gt=0)
    # Accept only operations of the allow-list (`gateway persisted add`), by hash or by
    # document; unset: on in production, off elsewhere.
    persisted_queries_only: bool | None = None
    # The response cache (see core/response_cache.py): on, how long an entry lives (per
    # type it read, as JSON: {"Report": 30}; the shortest of its types counts), how long
    # one that read the live counters lives, and the bytes each process keeps in memory.
    response_cache: bool = True
    cache_ttl: float = Field(default=60.0, gt=0)
    cache_ttls: dict[str, float] = Field(default_factory=dict)
    cache_volatile_ttl: float = Field(default=1.0, gt=0)
    cache_memory_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # Operations one WebSocket connection may run at once (subscriptions, mostly); one more
    # closes it with 4429.
    max_subscriptions_per_connection: int = Field(default=100, gt=0)
    # Seconds between keep-alive messages on an idle WebSocket or event stream; 0: none.
    ws_keep_alive: float = Field(default=15.0, ge=0)
    # WebSocket messages compressed (permessage-deflate), when the client offers it.
    ws_compression: bool = False
    # A line per HTTP request in the log: off by default, since it costs every request
    # a formatted log record.
    access_log: bool = False
    # Log lines as text, or as a JSON object each; and a line for each operation slower
    # than this many seconds, with its cost and round trips (0: none).
    log_format: Literal["text", "json"] = "text"
    slow_operation_seconds: float = Field(default=1.0, ge=0)
    # Where traces go over OTLP/HTTP (as http://collector:4318); unset: nothing is traced.
    otlp_endpoint: str | None = None
    # Distinct operation names a process labels its metrics with; the next ones are "other".
    metrics_operations: int = Field(default=100, ge=0)
    # Seconds in-flight requests get to finish after SIGTERM before the process exits.
    shutdown_timeout: float = Field(default=10.0, ge=0)
    # Browser origins allowed to call the API (comma-separated, or "*"); unset: none in
    # production, any localhost origin in development.
    cors_origins: str | None = None
    # Whether browsers may send cookies and Authorization to the API cross-origin.
    cors_allow_credentials: bool = False
    # Cost units each client may spend per window, as "20000/60s"; per role, as JSON
    # ({"admin": "0", "editor": "100000/60s"}, "0": no limit). Unset: no limit.
    rate_limit: str | None = None
    rate_limits_by_role: dict[str, str] = Field(default_factory=dict)
    # Proxies whose X-Forwarded-For names an anonymous caller's address: addresses or CIDR
    # blocks, comma-separated. Any other peer is the caller itself.
    trusted_proxies: str = ""

    @field_validator("rate_limit")
    @classmethod
    def _a_rate_limit(cls, value: str | None) -> str | None:
        if value is not None:
            parse_budget(value)
        return value

    @field_validator("rate_limits_by_role")
    @classmethod
    def _rate_limits_of_roles(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = set(value) - set(RATE_LIMITED_ROLES)
        if unknown:
            raise SettingsError(
                f"no role named {', '.join(sorted(unknown))}; "
                f"the roles are {', '.join(RATE_LIMITED_ROLES)}"
            )
        for budget in value.values():
            parse_budget(budget)
        return value

    @field_validator("database_url")
    @classmethod
    def _relational_backend(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return driven_url(value)
        except ArgumentError:
            raise ValueError("not a database URL (scheme://user@host/database)") from None

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, found, _ = value.partition("://")
        if not found or scheme.lower() not in REDIS_SCHEMES:
            raise ValueError(
                "not a Redis URL: redis://host:port/db, rediss:// with TLS, unix:///path, "
                "or redis+sentinel://host:port/service/db"
            )
        sentinel_url(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        parse_networks(value)
        return value

    @model_validator(mode="after")
    def _secrets_are_set_in_production(self) -> Settings:
        if self.environment is Environment.PRODUCTION:
            if self.secret_key.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise SettingsError(
                    f"{ENV_PREFIX}SECRET_KEY is missing or a placeholder; "
                    "production needs a real secret"
                )
            missing = [
                f"{ENV_PREFIX}{name.upper()}"
                for name in ("database_url", "mongo_url", "redis_url")
                if getattr(self, name) is None
            ]
            if missing:
                raise SettingsError(
                    f"{', '.join(missing)} must be set in production "
                    "(embedded servers are for development only)"
                )
        return self

    @property
    def is_development(self) -> bool:
        return self.environment is Environment.DEVELOPMENT

    def rate_limit_budgets(self) -> dict[str, Budget | None]:
        """Each role's budget; None: no limit."""
        default = parse_budget(self.rate_limit) if self.rate_limit is not None else None
        return {
            role: parse_budget(self.rate_limits_by_role[role])
            if role in self.rate_limits_by_role
            else default
            for role in RATE_LIMITED_ROLES
        }

    @property
    def accepts_only_persisted_queries(self) -> bool:
        if self.persisted_queries_only is not None:
            return self.persisted_queries_only
        return self.environment is Environment.PRODUCTION
