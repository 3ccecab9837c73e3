"""Which tests a run collects, and what it measures: a run given stores of its own keeps
those the stores reach, not those in a browser; a test marked ``no_cover`` runs untraced;
a connection left open fails the session instead of hanging it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.given_stores import GIVEN_STORES

pytest_plugins = ["pytester"]

# The suite's own hook, over fixtures named as the suite's are.
CONFTEST = """
import pytest

from tests.conftest import pytest_collection_modifyitems


@pytest.fixture
def store_urls():
    return None


@pytest.fixture
def settings(store_urls):
    return store_urls


@pytest.fixture
def browser(settings):
    return settings
"""
TESTS = """
def test_reaching_the_stores(settings):
    pass


def test_on_servers_of_its_own(tmp_path):
    pass


def test_needing_no_store():
    pass


def test_in_a_browser(browser):
    pass
"""
EVERY_TEST = {
    "test_reaching_the_stores", "test_on_servers_of_its_own", "test_needing_no_store",
    "test_in_a_browser",
}  # fmt: skip


def _collected(pytester: pytest.Pytester) -> set[str]:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TESTS)
    # The sandbox has none of the suite's configuration, which pytest-asyncio would warn of.
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:asyncio")
    return {line.rpartition("::")[2] for line in result.outlines if "::" in line}


@pytest.mark.parametrize("given", GIVEN_STORES)
def test_a_run_given_stores_collects_only_the_tests_they_reach(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    for name in GIVEN_STORES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(given, "redis://127.0.0.1:1/0")
    assert _collected(pytester) == {"test_reaching_the_stores"}


def test_a_run_on_the_embedded_servers_collects_every_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in GIVEN_STORES:
        monkeypatch.delenv(name, raising=False)
    assert _collected(pytester) == EVERY_TEST


# The generated-document tests are marked so: measured, they took twice as long. The test
# is a coroutine, as they are, run by the event loop that pytest-asyncio started traced.
@pytest.mark.no_cover
async def test_a_test_marked_no_cover_runs_untraced() -> None:
    assert sys.gettrace() is None


# A connection still reading when the session ends, to a listener that never answers, on
# uvloop and with warnings as errors, as the suite runs.
LEAKING_CONFTEST = """
import asyncio

import uvloop

from tests.conftest import connections_closed_by_the_end

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
"""
LEAKING_TEST = """
import asyncio
import socket

LISTENER = socket.create_server(("127.0.0.1", 0))
LEFT_OPEN = []


async def test_leaving_a_connection_open():
    LEFT_OPEN.append(await asyncio.open_connection(*LISTENER.getsockname()))
"""
XDIST_WORKER_ENVIRONMENT = (
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
)
LEAKING_SETTINGS = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
filterwarnings = error
"""


def test_a_connection_left_open_fails_the_session_instead_of_hanging_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    # A run of its own, not a parallel run's worker, whichever this test runs in.
    for name in XDIST_WORKER_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest(LEAKING_CONFTEST)
    pytester.makepyfile(LEAKING_TEST)
    pytester.makeini(LEAKING_SETTINGS)
    # Without the fixture, the process waits for ever as its event loop closes.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*connections left open at the end of the session, to *127.0.0.1*"]
    )
