from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import make_url

from core.settings import Settings
from core.stores import Store, store_name
from gateway import cli
from gateway.embedded.process import LOOPBACK
from gateway.migrate import alembic_config
from tests.databases import BACKEND, needs_server
from tests.ports import own_port

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_migrate_current_downgrade_and_upgrade(
    configured: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrate", "current"]) == 0
    assert f"postgresql: {HEAD} (head {HEAD})" in capsys.readouterr().out

    assert cli.main(["migrate", "downgrade", "base"]) == 0
    output = capsys.readouterr().out
    assert f"postgresql: base (head {HEAD})" in output
    assert "mongodb: 0 (head 3)" in output

    assert cli.main(["migrate"]) == 0
    output = capsys.readouterr().out
    assert f"postgresql: {HEAD} (head {HEAD})" in output
    assert "mongodb: 3 (head 3)" in output


def test_seed_command_reports_what_it_wrote(
    configured: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["seed", "--reports", "30", "--random-seed", "3", "--no-progress"]) == 0
    assert "30 reports" in capsys.readouterr().out


def test_seed_refuses_a_negative_count(
    configured: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["seed", "--reports", "-5"]) == 2
    assert "--reports must not be negative" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["frobnicate"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    "store", [pytest.param("postgres", marks=needs_server("a file always answers")), "redis"]
)
def test_a_store_that_does_not_answer_is_named_in_one_line(
    configured: Settings,
    store: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A command run where a store refuses the connection says which store, and why in the
    driver's words, with no traceback: what an operator running it in a deployment reads."""
    port = own_port()  # nothing listens there
    if store == "postgres":
        url = make_url(str(configured.database_url)).set(host=LOOPBACK, port=port)
        monkeypatch.setenv("GATEWAY_DATABASE_URL", url.render_as_string(hide_password=False))
    else:
        monkeypatch.setenv("GATEWAY_REDIS_URL", f"redis://{LOOPBACK}:{port}/0")
    # The seed applies the migrations first, then writes to every store.
    assert cli.main(["seed", "--reports", "2", "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert f"{store_name(Store(store), BACKEND)} at {LOOPBACK}:{port} does not answer (" in error
    assert "Traceback" not in error
    assert len(error.splitlines()) == 1
