from __future__ import annotations

from pathlib import Path

import pytest

from gateway import cli
from gateway.schema import export_sdl

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_checked_in_schema_is_current() -> None:
    assert SCHEMA_FILE.read_text() == export_sdl(), (
        "schema.graphql is stale: run `gateway export-schema --output schema.graphql`"
    )


def test_export_schema_command_prints_the_sdl(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export-schema"]) == 0
    assert capsys.readouterr().out == export_sdl()
