from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory

from core.settings import Settings
from gateway import cli
from gateway.migrate import alembic_config

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
