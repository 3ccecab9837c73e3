"""GraphiQL and the dashboard: served by the gateway alone, and working in a real browser.

The browser tests run Chromium against the gateway served over HTTP on this test's stores
(see tests/browser.py); their screenshots are kept under ``test-artifacts/browser/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from core.connections import Connections
from gateway.pages import DASHBOARD_PATH, IMMUTABLE, REVALIDATE
from gateway.seed import seed
from tests import browser as browser_harness
from tests.browser import BROWSER_TIMEOUT, Browser, ServedGateway
from tests.processes import LOOPBACK

chromedriver = browser_harness.chromedriver
chromium = browser_harness.chromium
browser = browser_harness.browser
serve = browser_harness.serve

HTML = {"accept": "text/html"}
REPORTS = 20
in_a_browser = pytest.mark.timeout(BROWSER_TIMEOUT)


class _Assets(HTMLParser):
    """The URLs a page's tags load."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


def _assets(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize(("path", "headers"), [("/graphql", HTML), ("/dashboard", {})])
async def test_pages_load_only_the_gateways_own_files(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    page = await client.get(path, headers=headers)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == REVALIDATE
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assets = _assets(page.text)
    assert assets
    for url in assets:
        assert url.startswith("/assets/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        vendored = url.startswith("/assets/vendor/")
        assert asset.headers["cache-control"] == (IMMUTABLE if vendored else REVALIDATE)


async def test_every_vendored_package_carries_its_licence(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers=HTML)
    folders = {url.split("/")[3] for url in _assets(page.text) if url.startswith("/assets/vendor/")}
    assert {re.sub(r"-[\d.]+$", "", folder) for folder in folders} >= {
        "graphiql",
        "graphiql-plugin-explorer",
        "react",
        "react-dom",
    }
    for folder in folders:
        licence = await client.get(f"/assets/vendor/{folder}/LICENSE")
        assert licence.status_code == 200
        assert "Permission is hereby granted" in licence.text


async def test_unknown_assets_are_404s_in_json(client: httpx.AsyncClient) -> None:
    for url in ("/assets/vendor/graphiql-0.0.0/graphiql.min.js", "/assets/../pages.py"):
        response = await client.get(url)
        assert response.status_code == 404
        assert response.json()["errors"]


async def test_a_query_in_the_address_is_answered_not_shown_in_graphiql(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/graphql", params={"query": "{ __typename }"}, headers=HTML)
    assert response.status_code == 406


@pytest.fixture
async def catalogue(connections: Connections) -> Connections:
    await seed(connections, reports=REPORTS, random_seed=5, progress=False)
    return connections


@pytest.fixture
def gateway(catalogue: Connections, serve: Callable[..., ServedGateway]) -> ServedGateway:
    return serve()


def _top_report(gateway: ServedGateway) -> dict[str, Any]:
    data = gateway.data("{ topReports(by: VIEWS, limit: 1) { id title stats { views } } }")
    assert isinstance(data, dict)
    report: dict[str, Any] = data["topReports"][0]
    return report


def _record_view(gateway: ServedGateway, report_id: object) -> None:
    response = LOOPBACK.post(
        f"http://127.0.0.1:{gateway.port}/graphql",
        json={
            "query": "mutation($id: ID!) { recordView(reportId: $id) { __typename } }",
            "variables": {"id": report_id},
        },
    )
    assert response.json()["data"] == {"recordView": {"__typename": "Counted"}}


def _editor(browser: Browser, selector: str) -> str:
    """An editor's whole text: CodeMirror draws only the lines in sight."""
    text = browser.script(
        "const editor = document.querySelector(arguments[0] + ' .CodeMirror');"
        "return editor ? editor.CodeMirror.getValue() : '';",
        selector,
    )
    assert isinstance(text, str)
    return text


def _graphiql(browser: Browser, gateway: ServedGateway, query: str) -> None:
    browser.open(f"http://127.0.0.1:{gateway.port}/graphql?q={quote(query)}")
    browser.wait_for(
        lambda _: _editor(browser, ".graphiql-query-editor") == query, "GraphiQL to show the query"
    )


def _run(browser: Browser) -> None:
    browser.element(".graphiql-execute-button").click()


def _response(browser: Browser) -> str:
    return _editor(browser, ".graphiql-response")


def _assert_stayed_local(browser: Browser) -> None:
    assert browser.requests(), "the network log recorded nothing"
    assert browser.foreign_requests() == []
    assert browser.failed_requests() == []
    assert browser.console_errors() == []


@in_a_browser
def test_graphiql_runs_a_query_with_nothing_from_another_host(
    browser: Browser, gateway: ServedGateway
) -> None:
    top = _top_report(gateway)
    query = "query Top { topReports(by: VIEWS, limit: 1) { id title } }"
    _graphiql(browser, gateway, query)
    _run(browser)
    result = browser.wait_for(lambda _: _response(browser), "the query's result")
    assert json.loads(result)["data"] == {"topReports": [{"id": top["id"], "title": top["title"]}]}
    browser.screenshot("query")
    # The explorer plugin lists the schema's fields, read by introspection.
    browser.element("button[aria-label='Show GraphiQL Explorer']").click()
    browser.wait_for(
        lambda _: "topReports" in browser.text(".graphiql-explorer-root"), "the explorer"
    )
    browser.screenshot("explorer")
    _assert_stayed_local(browser)
    # GraphiQL asked for the schema and ran the query over HTTP, on the gateway's path.
    assert f"http://127.0.0.1:{gateway.port}/graphql" in browser.requests()


@in_a_browser
def test_graphiql_runs_a_subscription_over_the_websocket(
    browser: Browser, gateway: ServedGateway
) -> None:
    top = _top_report(gateway)
    views = top["stats"]["views"]
    _graphiql(
        browser, gateway, f'subscription {{ reportStats(reportId: "{top["id"]}") {{ views }} }}'
    )
    _run(browser)
    browser.wait_for(
        lambda _: (
            _response(browser)
            and json.loads(_response(browser))["data"]["reportStats"]["views"] == views
        ),
        "the subscription's first value",
    )
    _record_view(gateway, top["id"])
    browser.wait_for(
        lambda _: json.loads(_response(browser))["data"]["reportStats"]["views"] == views + 1,
        "the subscription's next value",
    )
    browser.screenshot("subscription")
    _assert_stayed_local(browser)
    assert f"ws://127.0.0.1:{gateway.port}/graphql" in browser.requests()


@in_a_browser
def test_graphiql_sends_the_headers_of_its_headers_editor(
    browser: Browser, gateway: ServedGateway
) -> None:
    _graphiql(browser, gateway, "query Service { service { name } }")
    browser.element_with_text("button", "Headers").click()
    # Typed into CodeMirror, braces and quotes would be closed twice; set the editor's text
    # through the editor itself instead, as a paste does.
    browser.wait_for(
        lambda _: browser.script(
            "const editor = document.querySelector("
            "  '.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror');"
            "if (!editor) return false;"
            "editor.CodeMirror.setValue(arguments[0]);"
            "return true;",
            json.dumps({"Authorization": "Bearer not-a-key"}),
        ),
        "the headers editor",
    )
    _run(browser)
    result = browser.wait_for(lambda _: _response(browser), "the query's result")
    assert json.loads(result)["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    browser.screenshot("unauthenticated")


def _count(text: str) -> int:
    return int(re.sub(r"\D", "", text))


def _dashboard(browser: Browser, gateway: ServedGateway) -> None:
    browser.open(f"http://127.0.0.1:{gateway.port}{DASHBOARD_PATH}")
    browser.wait_for(
        lambda _: browser.element("#status").get_attribute("data-state") == "connected",
        "the dashboard to connect",
    )
    browser.wait_for(lambda _: browser.text("#board tbody tr"), "the leaderboard")


def _row_views(browser: Browser, report_id: str) -> int:
    return _count(browser.text(f"#board tr[data-report-id='{report_id}'] .views"))


def _points(browser: Browser) -> int:
    return int(browser.element("#chart").get_attribute("data-points") or 0)


@in_a_browser
def test_the_dashboard_shows_views_as_they_are_recorded(
    browser: Browser, gateway: ServedGateway
) -> None:
    _dashboard(browser, gateway)
    # Follow the second report on the board, as a user would: by clicking it.
    second = browser.element("#board tbody tr:nth-child(2)")
    report_id = second.get_attribute("data-report-id")
    assert report_id is not None
    second.click()
    browser.wait_for(
        lambda _: (
            browser.text("#watched-name")
            == browser.text(f"#board tr[data-report-id='{report_id}'] .title")
        ),
        "the dashboard to follow the chosen report",
    )
    browser.wait_for(lambda _: _points(browser) == 1, "the chart's first point")
    views = _row_views(browser, report_id)
    assert _count(browser.text("#watched-views")) == views

    _record_view(gateway, report_id)
    browser.wait_for(lambda _: _row_views(browser, report_id) == views + 1, "the board's new count")
    browser.wait_for(
        lambda _: _count(browser.text("#watched-views")) == views + 1, "the followed count"
    )
    browser.wait_for(lambda _: _points(browser) == 2, "the chart's new point")
    browser.screenshot("view-recorded")
    _assert_stayed_local(browser)
    assert f"ws://127.0.0.1:{gateway.port}/graphql" in browser.requests()


@in_a_browser
def test_the_dashboard_follows_a_report_named_by_its_database_id(
    browser: Browser, gateway: ServedGateway
) -> None:
    data = gateway.data(
        "{ reports(first: 1, orderBy: {field: VIEWS, direction: ASC}) "
        "{ edges { node { id databaseId title stats { views } } } } }"
    )
    assert isinstance(data, dict)
    least = data["reports"]["edges"][0]["node"]
    _dashboard(browser, gateway)
    browser.element("#watch-id").send_keys(str(least["databaseId"]))
    browser.element("#watch button").click()
    browser.wait_for(
        lambda _: browser.text("#watched-name") == least["title"], "the named report's title"
    )
    browser.wait_for(
        lambda _: browser.text("#watched-views") == str(least["stats"]["views"]),
        "the named report's views",
    )
    browser.screenshot("followed")
    _assert_stayed_local(browser)


@in_a_browser
def test_the_dashboard_comes_back_after_the_gateway_restarts(
    browser: Browser, gateway: ServedGateway, serve: Callable[..., ServedGateway]
) -> None:
    _dashboard(browser, gateway)
    report_id = browser.element("#board tbody tr").get_attribute("data-report-id")
    assert report_id is not None

    # Stopped, then started again on its port.
    gateway.stop()
    browser.wait_for(
        lambda _: browser.element("#status").get_attribute("data-state") == "reconnecting",
        "the dashboard to show that it lost the gateway",
    )
    browser.screenshot("offline")

    again = serve(port=gateway.port)
    browser.wait_for(
        lambda _: browser.element("#status").get_attribute("data-state") == "connected",
        "the dashboard to connect again",
    )
    # Subscribed again, not only connected: a view counted now reaches the page.
    views = _row_views(browser, report_id)
    _record_view(again, report_id)
    browser.wait_for(lambda _: _row_views(browser, report_id) == views + 1, "the board's new count")
    browser.wait_for(
        lambda _: _count(browser.text("#watched-views")) == views + 1, "the followed count"
    )
    browser.screenshot("reconnected")
    assert browser.foreign_requests() == []
