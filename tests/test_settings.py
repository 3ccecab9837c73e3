from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from core.settings import ENV_PREFIX, Environment, Settings
from core.store_urls import SENTINEL_PORT, SentinelUrl, sentinel_url
from gateway import cli

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_URLS = {
    "GATEWAY_DATABASE_URL": "postgresql+asyncpg://gateway@db/gateway",
    "GATEWAY_MONGO_URL": "mongodb://mongo",
    "GATEWAY_REDIS_URL": "redis://redis",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*Settings.model_fields]:
        monkeypatch.delenv(f"{ENV_PREFIX}{name.upper()}", raising=False)


def test_development_needs_no_configuration() -> None:
    settings = Settings()
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.database_url is None
    assert settings.data_dir == Path(".gateway-data")


def test_values_are_read_from_the_environment_and_cast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9001")
    monkeypatch.setenv("GATEWAY_DATA_DIR", "/srv/gateway")
    monkeypatch.setenv("GATEWAY_READINESS_TIMEOUT", "0.5")
    settings = Settings()
    assert settings.port == 9001
    assert settings.data_dir == Path("/srv/gateway")
    assert settings.readiness_timeout == 0.5


def test_settings_cannot_change_once_read() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("secret", [None, "", "change-me", "development-only-secret"])
def test_production_refuses_a_missing_or_placeholder_secret(
    monkeypatch: pytest.MonkeyPatch, secret: str | None
) -> None:
    monkeypatch.setenv("GATEWAY_ENVIRONMENT", "production")
    for name, value in PRODUCTION_URLS.items():
        monkeypatch.setenv(name, value)
    if secret is not None:
        monkeypatch.setenv("GATEWAY_SECRET_KEY", secret)
    with pytest.raises(ValidationError, match="GATEWAY_SECRET_KEY"):
        Settings()


def test_production_refuses_embedded_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ENVIRONMENT", "production")
    monkeypatch.setenv("GATEWAY_SECRET_KEY", "a-real-secret-of-some-length")
    monkeypatch.setenv("GATEWAY_MONGO_URL", "mongodb://mongo")
    with pytest.raises(ValidationError, match="GATEWAY_DATABASE_URL, GATEWAY_REDIS_URL"):
        Settings()


@pytest.mark.parametrize(
    ("variable", "url", "problem"),
    [
        (
            "GATEWAY_DATABASE_URL",
            "oracle+oracledb://user:hunter2@host/catalogue",
            "no relational backend 'oracle'; supported: ",
        ),
        ("GATEWAY_DATABASE_URL", "catalogue.db", "not a database URL"),
        (
            "GATEWAY_DATABASE_URL",
            "postgresql+psycopg2://user:hunter2@host/catalogue",
            "the gateway runs postgresql on asyncpg: postgresql+asyncpg://",
        ),
        ("GATEWAY_REDIS_URL", "memcached://host:11211", "not a Redis URL"),
        ("GATEWAY_REDIS_URL", "host:6379", "not a Redis URL"),
        ("GATEWAY_REDIS_URL", "redis+sentinel://:hunter2@host:26379", "names its service"),
        (
            "GATEWAY_REDIS_URL",
            "redis+sentinel://:hunter2@host:port/catalogue",
            "'port' is not a port",
        ),
        (
            "GATEWAY_REDIS_URL",
            "redis+sentinel://:hunter2@host:70000/catalogue",
            "'70000' is not a port",
        ),
        (
            "GATEWAY_REDIS_URL",
            "redis+sentinel://:hunter2@host,/catalogue",
            "a sentinel without a host",
        ),
        (
            "GATEWAY_REDIS_URL",
            "redis+sentinel://:hunter2@host/catalogue/zero",
            "'zero' is not a database number",
        ),
        (
            "GATEWAY_REDIS_URL",
            "redis+sentinel://:hunter2@host/catalogue?password=x",
            "unknown option password",
        ),
    ],
)
def test_a_store_url_the_gateway_cannot_use_is_refused_without_its_secrets(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    url: str,
    problem: str,
) -> None:
    monkeypatch.setenv(variable, url)
    assert cli.main(["serve"]) == 2
    error = capsys.readouterr().err
    assert variable in error
    assert problem in error
    assert "hunter2" not in error
    assert "Traceback" not in error


@pytest.mark.parametrize(
    ("given", "driven"),
    [
        (
            "postgresql://user:p%40ss@host:5432/catalogue",
            "postgresql+asyncpg://user:p%40ss@host:5432/catalogue",
        ),
        (
            "postgres://user@host/catalogue?ssl=require",
            "postgresql+asyncpg://user@host/catalogue?ssl=require",
        ),
        ("mysql://user@host:3306/catalogue", "mysql+asyncmy://user@host:3306/catalogue"),
        ("mariadb://user@host/catalogue", "mysql+asyncmy://user@host/catalogue"),
        ("sqlite:////var/lib/catalogue.db", "sqlite+aiosqlite:////var/lib/catalogue.db"),
        ("mysql+asyncmy://user@host/catalogue", "mysql+asyncmy://user@host/catalogue"),
    ],
)
def test_a_database_url_without_the_driver_gets_the_gateway_s_own(
    monkeypatch: pytest.MonkeyPatch, given: str, driven: str
) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", given)
    assert Settings().database_url == driven


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (
            "redis+sentinel://one:26380,two/catalogue",
            SentinelUrl(sentinels=(("one", 26380), ("two", SENTINEL_PORT)), service="catalogue"),
        ),
        (
            "redis+sentinel://:s%40cret@[::1]:26381,10.0.0.2:26382/cache%20one/3"
            "?sentinel_username=watcher&sentinel_password=w%26tch",
            SentinelUrl(
                sentinels=(("::1", 26381), ("10.0.0.2", 26382)),
                service="cache one",
                db=3,
                password="s@cret",
                sentinel_username="watcher",
                sentinel_password="w&tch",
            ),
        ),
        ("redis+sentinel://gateway:pass@host/catalogue/", None),
    ],
)
def test_a_sentinel_url_names_its_sentinels_service_and_database(
    monkeypatch: pytest.MonkeyPatch, url: str, named: SentinelUrl | None
) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", url)
    assert Settings().redis_url == url
    found = sentinel_url(url)
    assert found is not None
    if named is not None:
        assert found == named
    else:
        assert (found.username, found.password, found.sentinels) == (
            "gateway",
            "pass",
            (("host", SENTINEL_PORT),),
        )


def test_other_redis_urls_are_not_sentinel_urls() -> None:
    for url in ("redis://host:6379/0", "rediss://host", "unix:///run/redis.sock"):
        assert sentinel_url(url) is None


def test_production_starts_with_a_real_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ENVIRONMENT", "production")
    monkeypatch.setenv("GATEWAY_SECRET_KEY", "a-real-secret-of-some-length")
    for name, value in PRODUCTION_URLS.items():
        monkeypatch.setenv(name, value)
    assert not Settings().is_development


def test_the_command_line_names_the_missing_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_ENVIRONMENT", "production")
    for name, value in PRODUCTION_URLS.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["serve"]) == 2
    error = capsys.readouterr().err
    assert "GATEWAY_SECRET_KEY is missing or a placeholder" in error
    assert "Traceback" not in error


def test_compose_sets_only_variables_the_settings_read() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"]["gateway"]["environment"]
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert set(environment) <= known
    assert {"GATEWAY_DATABASE_URL", "GATEWAY_MONGO_URL", "GATEWAY_REDIS_URL"} <= set(environment)


def test_compose_wires_the_gateway_to_healthy_stores() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "mongodb", "redis", "gateway"}
    assert all("healthcheck" in service for service in services.values())
    gateway = services["gateway"]
    assert gateway["depends_on"] == {
        store: {"condition": "service_healthy"} for store in ("postgres", "mongodb", "redis")
    }
    # Each URL points at the service of that name.
    for variable, host in (
        ("GATEWAY_DATABASE_URL", "postgres"),
        ("GATEWAY_MONGO_URL", "mongodb"),
        ("GATEWAY_REDIS_URL", "redis"),
    ):
        assert re.search(rf"[@/]{host}:\d+", gateway["environment"][variable])
    assert set(compose["volumes"]) == {"postgres-data", "mongodb-data", "redis-data"}


def test_a_missing_key_file_is_named_at_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("GATEWAY_JWKS_FILE", str(tmp_path / "absent.json"))
    assert cli.main(["serve"]) == 2
    assert "GATEWAY_JWKS_FILE" in capsys.readouterr().err
