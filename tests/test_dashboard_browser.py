"""The dashboard in a real browser: Debian's Chromium driven by Playwright.

A uvicorn server in a thread serves a SQLite Spot holding one entry of each
content type (and hostile markup); the tests page, search, open entries and
check what the browser actually rendered -- an image that loaded, a markdown
heading, a table -- and that no stored script ever ran.

Set ``BEAUTYSPOT_SCREENSHOTS=docs/img`` to save the screenshots the docs use.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import beautyspot_async as bs

from ._dashboard_data import FILLER, ContentSpot, build_content
from ._services import require_executable, require_module

CHROMIUM = os.environ.get("BEAUTYSPOT_CHROMIUM", "/usr/bin/chromium")

require_module("starlette", extra="dashboard")
require_module("uvicorn", extra="dashboard")
require_module("playwright", extra="dev")
require_executable(CHROMIUM, install="apt-get install chromium (Debian's package)")

import uvicorn  # noqa: E402  (after the checks above)
from playwright.sync_api import Browser, Page, Route, sync_playwright  # noqa: E402

from beautyspot_async.dashboard import create_app  # noqa: E402
from beautyspot_async.dashboard._app import bind, url_of  # noqa: E402

pytestmark = pytest.mark.slow

SHOTS = os.environ.get("BEAUTYSPOT_SCREENSHOTS")


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> ContentSpot:
    return build_content(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def base_url(content: ContentSpot) -> Iterator[str]:
    spot = bs.Spot("content", db=content.db, storage=content.blobs)
    with spot:
        app = create_app(spot)
        sock = bind("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        # uvicorn installs signal handlers only on the main thread; here it runs beside.
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        try:
            yield url_of(sock).rstrip("/")
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()


@pytest.fixture(scope="module")
def browser(base_url: str) -> Iterator[Browser]:
    # Playwright's sync API keeps an event loop running on this thread, where
    # asyncio.run() (building the data) and the Spot's sync shim must not run:
    # depending on base_url builds and opens everything before it starts.
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


class Session:
    """A page that records every request leaving the dashboard's origin."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base = base_url
        self.foreign: list[str] = []
        self.errors: list[str] = []
        origin = urlsplit(base_url).netloc

        def guard(route: Route) -> None:
            url = route.request.url
            if urlsplit(url).netloc == origin or url.startswith("data:"):
                route.continue_()
            else:
                self.foreign.append(url)
                route.abort()

        page.route("**/*", guard)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # A CSP violation (a blocked inline script or style) is logged as an error.
        page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )

    def open(self, path: str) -> Page:
        response = self.page.goto(self.base + path)
        assert response is not None, path
        assert response.status == 200, path
        return self.page

    def pwned(self) -> Any:
        return self.page.evaluate("typeof window.__pwned")

    def shot(self, name: str, *, full_page: bool = True) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            path = Path(SHOTS) / f"dashboard-{name}.png"
            self.page.screenshot(path=str(path), full_page=full_page)


@pytest.fixture
def session(browser: Browser, base_url: str) -> Iterator[Session]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        opened = Session(context.new_page(), base_url)
        yield opened
        assert opened.foreign == [], "the dashboard made requests to another origin"
        assert opened.errors == [], "a script failed or the CSP blocked something"
        assert opened.pwned() == "undefined"
    finally:
        context.close()


def test_index_pages_through_every_entry(session: Session, content: ContentSpot) -> None:
    page = session.open("/")
    total = FILLER + len(content.keys)
    assert page.locator("#count").inner_text().startswith(f"{total} entries")
    assert page.locator("table.entries tbody tr").count() == 50
    assert page.locator("section.totals").get_by_text("filler").count() == 1
    session.shot("index", full_page=False)
    page.get_by_role("link", name="older →").click()
    page.wait_for_url("**page=2**")
    assert "showing 51\u2013100" in page.locator("#count").inner_text()
    first_on_two = page.locator("a.key").first.get_attribute("href")
    page.get_by_role("link", name="← newer").click()
    page.wait_for_url("**page=1**")
    assert page.locator(f'a.key[href="{first_on_two}"]').count() == 0


def test_filter_and_search(session: Session, content: ContentSpot) -> None:
    page = session.open("/")
    page.select_option("select[name=status]", "expired")
    page.get_by_role("button", name="show").click()
    page.wait_for_url("**status=expired**")
    assert page.locator("table.entries tbody tr").count() == 1
    assert page.locator("a.key").first.get_attribute("href") == (
        f"/entries/{content.keys['expiring']}"
    )
    page = session.open("/")
    page.fill("input[name=q]", content.keys["csv"][:10])
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**q=**")
    assert page.locator("table.entries tbody tr").count() == 1
    page.locator("a.key").first.click()
    page.wait_for_url(f"**/entries/{content.keys['csv']}")
    assert page.locator("table.csv th").all_inner_texts() == ["name", "score"]


def test_markdown_is_rendered(session: Session, content: ContentSpot) -> None:
    page = session.open(f"/entries/{content.keys['markdown']}")
    assert page.locator(".markdown h1").inner_text() == "Report title"
    assert page.locator(".markdown li").count() == 2
    assert page.locator(".markdown script, .markdown img").count() == 0
    session.shot("markdown")


@pytest.mark.parametrize(("label", "width"), [("png", 3), ("svg", 40)])
def test_images_load(session: Session, content: ContentSpot, label: str, width: int) -> None:
    page = session.open(f"/entries/{content.keys[label]}")
    image = page.locator("img.inline")
    image.wait_for()
    page.wait_for_function("document.querySelector('img.inline').complete")
    assert image.evaluate("img => img.naturalWidth") == width


def test_json_is_a_collapsible_tree(session: Session, content: ContentSpot) -> None:
    page = session.open(f"/entries/{content.keys['json']}")
    nested = page.locator(".tree details details").first
    assert nested.evaluate("d => d.open") is False
    nested.locator("summary").click()
    assert nested.evaluate("d => d.open") is True
    assert page.get_by_text("<script>window.__pwned=1</script>").count() == 1
    session.shot("json")


def test_text_and_csv(session: Session, content: ContentSpot) -> None:
    page = session.open(f"/entries/{content.keys['csv']}")
    assert page.locator("table.csv tr").count() == 4
    page = session.open(f"/entries/{content.keys['plain']}")
    text = page.locator(".value pre").inner_text()
    assert "<script>window.__pwned=1</script>" in text
    page = session.open(f"/entries/{content.keys['mermaid']}")
    assert "graph TD; A-->B" in page.locator("pre.diagram").inner_text()


def test_stored_scripts_never_run(session: Session, content: ContentSpot) -> None:
    for label, key in content.keys.items():
        page = session.open(f"/entries/{key}")
        page.wait_for_load_state("load")
        assert session.pwned() == "undefined", label
    session.open(f"/entries/{content.keys['svg']}/raw")
    assert session.pwned() == "undefined"
    page = session.open("/failures")
    assert page.locator("table.failures tbody tr").count() == 1
    session.shot("failures")
