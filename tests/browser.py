"""A real browser for the tests: Debian's Chromium, headless, driven by Selenium through
Debian's chromedriver, against the gateway's application served over real HTTP by uvicorn,
on a thread of the test process with an event loop of its own: Selenium's calls block the
test while the pages it drives talk to the gateway.

Nothing the browser does may leave this machine: host names resolve to nothing and every
other address goes to a proxy that refuses, and ``Browser.foreign_requests`` lists every
request the pages made elsewhere (from Chromium's network log), for the tests to assert
that there were none. Screenshots are kept under ``test-artifacts/browser/``.

The session installs Chromium and its driver with apt-get when they are missing (as root),
and fails, naming what is missing, when it cannot.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from bench.installs import InstallError, apt_install
from core.settings import Settings
from gateway.app import create_app
from tests.clients import loopback_server
from tests.ports import own_port
from tests.processes import GONE_TIMEOUT, READY_TIMEOUT, data_at, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
# Generous bounds for "soon": they catch a page that never gets there, not a slow machine.
WAIT = 30.0
LOCAL_HOSTS = frozenset({"127.0.0.1"})
NETWORK_SCHEMES = frozenset({"http", "https", "ws", "wss"})
# The first browser test may install Chromium (apt-get update, then a few hundred MB).
BROWSER_TIMEOUT = 900
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,900",
    # No name resolves (127.0.0.1 is no name), and any address but loopback, which Chromium
    # never proxies, goes to a proxy where nothing listens: nothing reaches another host.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=127.0.0.1:9",
)
T = TypeVar("T")


@pytest.fixture(scope="session")
def chromedriver() -> Path:
    """Chromium and its driver, installed now if they are missing."""
    try:
        apt_install({"chromium": CHROMIUM, "chromium-driver": CHROMEDRIVER})
    except InstallError as error:
        pytest.fail(f"the browser tests need Chromium and chromedriver: {error}", pytrace=False)
    return CHROMEDRIVER


class Browser:
    """A test's use of the headless Chromium, and what its pages asked the network for."""

    def __init__(self, driver: webdriver.Chrome, name: str) -> None:
        self.driver = driver
        self.name = re.sub(r"[^\w.-]+", "-", name)
        self._requested: list[str] = []
        self._failed: list[str] = []
        self._urls: dict[str, str] = {}

    def open(self, url: str) -> None:
        self.driver.get(url)

    def wait_for(self, condition: Callable[[WebDriver], T], what: str) -> T:
        """``condition``'s first truthy answer, within ``WAIT`` seconds."""
        try:
            return WebDriverWait(self.driver, WAIT).until(condition)
        except TimeoutException:
            shot = self.screenshot("timeout")
            pytest.fail(f"waited {WAIT}s for {what}; the page is in {shot}", pytrace=False)

    def element(self, selector: str) -> WebElement:
        return self.driver.find_element("css selector", selector)

    def element_with_text(self, tag: str, text: str) -> WebElement:
        return self.driver.find_element("xpath", f"//{tag}[normalize-space()='{text}']")

    def text(self, selector: str) -> str:
        elements = self.driver.find_elements("css selector", selector)
        return elements[0].text if elements else ""

    def script(self, source: str, *arguments: object) -> Any:
        return self.driver.execute_script(source, *arguments)

    def screenshot(self, label: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{label}.png"
        self.driver.save_screenshot(str(path))
        print(f"screenshot: {path}")
        return path

    def requests(self) -> list[str]:
        """Every URL the pages requested, WebSockets included."""
        self._read_network_log()
        return list(self._requested)

    def foreign_requests(self) -> list[str]:
        return [
            url
            for url in self.requests()
            if urlsplit(url).scheme in NETWORK_SCHEMES and urlsplit(url).hostname not in LOCAL_HOSTS
        ]

    def failed_requests(self) -> list[str]:
        """Requests that got no answer or an error status (4xx, 5xx)."""
        self._read_network_log()
        return list(self._failed)

    def console_errors(self) -> list[str]:
        return [entry["message"] for entry in self.log("browser") if entry["level"] == "SEVERE"]

    def log(self, kind: str) -> list[dict[str, Any]]:
        """The entries of one of Chromium's logs since it was last read."""
        entries: list[dict[str, Any]] = self.driver.get_log(kind)  # type: ignore[no-untyped-call]
        return entries

    def _read_network_log(self) -> None:
        # Chromium hands each entry of its log over once: keep them.
        for entry in self.log("performance"):
            event = json.loads(entry["message"])["message"]
            method, parameters = event["method"], event["params"]
            if method == "Network.requestWillBeSent":
                self._requested.append(parameters["request"]["url"])
                self._urls[parameters["requestId"]] = parameters["request"]["url"]
            elif method == "Network.webSocketCreated":
                self._requested.append(parameters["url"])
            elif method == "Network.responseReceived" and parameters["response"]["status"] >= 400:
                response = parameters["response"]
                self._failed.append(f"{response['status']} {response['url']}")
            elif method == "Network.loadingFailed" and not parameters.get("canceled"):
                url = self._urls.get(parameters["requestId"], "?")
                self._failed.append(f"{parameters['errorText']} {url}")


@pytest.fixture(scope="session")
def chromium(
    chromedriver: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[webdriver.Chrome]:
    """One Chromium for a test process's browser tests: starting one costs more than most
    of those tests. Each test serves its pages from a gateway on a port of its own, so no
    page, storage or cache entry of one test is another's."""
    profile = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # The driver is Debian's: Selenium Manager, which would download one, never runs.
    service = Service(str(chromedriver), log_output=str(profile / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: webdriver.Chrome, request: pytest.FixtureRequest) -> Iterator[Browser]:
    # What came before this test (Chromium's own start-up tab, refused by the proxy, or the
    # last test's page) is no page of this test's: start its logs from a blank page.
    chromium.get("about:blank")
    browser = Browser(chromium, request.node.name)
    browser.log("performance")
    browser.log("browser")
    try:
        yield browser
        browser.screenshot("end")
    finally:
        # Leaving the page closes its connections before the test's gateway stops.
        chromium.get("about:blank")


class ServedGateway:
    """The gateway's application on ``settings``' stores, served on ``port``."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.port = port
        self._server = loopback_server(create_app(settings), port)
        # A daemon: a gateway that fails to stop fails its test, and must not keep the test
        # process from ending.
        self._thread = threading.Thread(
            target=self._server.run, name=f"gateway-{port}", daemon=True
        )
        self._thread.start()
        wait_for(
            lambda: self._server.started or not self._thread.is_alive(),
            "the gateway to start",
            READY_TIMEOUT,
        )
        assert self._server.started, "the gateway ended before it served"

    def data(self, document: str) -> object:
        return data_at(self.port, document)

    def stop(self) -> None:
        """Stop as at SIGTERM: its connections closed, its lifespan ended."""
        self._server.should_exit = True
        self._thread.join(GONE_TIMEOUT)
        assert not self._thread.is_alive(), "the gateway did not stop"


@pytest.fixture
def serve(settings: Settings) -> Iterator[Callable[..., ServedGateway]]:
    """Serve the gateway on this test's stores, on a port of its own or ``port``; whatever
    is still served is stopped afterwards."""
    started: list[ServedGateway] = []

    def start(port: int | None = None) -> ServedGateway:
        started.append(ServedGateway(settings, port or own_port()))
        return started[-1]

    try:
        yield start
    finally:
        for gateway in started:
            gateway.stop()
