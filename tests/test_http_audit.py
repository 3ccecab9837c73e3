"""The GraphQL-over-HTTP conformance audits of graphql-http, run against a served gateway."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from gateway.app import create_app
from tests.clients import serving

AUDIT_DIR = Path(__file__).parent / "http_audit"
AUDIT_PACKAGE = "graphql-http"
# The audits run concurrently and finish in well under a second; the rest is slack
# for a loaded machine, not for a hung server.
AUDIT_TIMEOUT = 60
INSTALL_TIMEOUT = 300


def _executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        # A missing runtime must not pass as a skipped audit on CI.
        pytest.fail(f"`{name}` is not on PATH; the GraphQL-over-HTTP audit needs Node.js")
    return path


def _installed_version() -> str | None:
    manifest = AUDIT_DIR / "node_modules" / AUDIT_PACKAGE / "package.json"
    if not manifest.is_file():
        return None
    version: str = json.loads(manifest.read_text())["version"]
    return version


@pytest.fixture(scope="module")
def audit_script() -> list[str]:
    """The command that audits a URL, with its pinned dependencies installed."""
    node = _executable("node")
    pinned: str = json.loads((AUDIT_DIR / "package.json").read_text())["dependencies"][
        AUDIT_PACKAGE
    ]
    # Comparing versions also catches a checkout whose pin moved past its node_modules.
    if _installed_version() != pinned:
        installed = subprocess.run(
            [_executable("npm"), "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=AUDIT_DIR,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
        if installed.returncode != 0:
            pytest.fail(f"npm ci failed in {AUDIT_DIR}:\n{installed.stdout}\n{installed.stderr}")
    return [node, str(AUDIT_DIR / "audit.mjs")]


async def _audit(command: list[str], url: str) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        *command, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(AUDIT_TIMEOUT):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        pytest.fail(f"the audit did not run ({process.returncode}):\n{stderr.decode()}")
    results: list[dict[str, Any]] = json.loads(stdout)
    return results


def _describe(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in sorted(results, key=lambda result: (result["status"] == "ok", result["id"])):
        lines.append(f"{result['id']:<5} {result['status']:<6} {result['name']}")
        if result["status"] != "ok":
            response = result["response"]
            lines.append(f"      reason: {result['reason']}")
            lines.append(
                f"      got: {response['status']} {response['contentType']} {response['body']!r}"
            )
    return "\n".join(lines)


async def test_gateway_passes_the_graphql_over_http_audit(
    settings: Settings, audit_script: list[str]
) -> None:
    async with serving(create_app(settings)) as address:
        results = await _audit(audit_script, f"http://{address}/graphql")
    assert results, "the audit ran no audits"
    # "error" is a failed MUST and "warn" a failed SHOULD; a failed MAY is a "notice",
    # an option the gateway may decline.
    failed = [result for result in results if result["status"] in {"error", "warn"}]
    if failed:
        pytest.fail(f"{len(failed)} of {len(results)} audits failed:\n{_describe(results)}")
