"""Fixtures for the web console tests: one kipuka server and one headless Chromium per module.

Chromium is Debian's (`apt-get install chromium`), driven by Playwright for
Python; Playwright's own browser downloads are never used. Screenshots of every
page go to $KIPUKA_SCREENSHOTS when set, else to a temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import Server, admin_token, make_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                 "--disable-default-apps", "--metrics-recording-only", "--mute-audio"]

# A label whose enrollments wait for an officer, answering 202 with Retry-After: 1; and
# admin client certificates accepted for one subject (as tests/test_admin_api.py does).
CONSOLE_CONFIG = {
    r'^retry_after = "60s".*$': 'retry_after = "1s"',
    r'^# client_ca = "tls/admin-ca.pem".*$': 'client_ca = "tls/client-ca.pem"',
    r"^subjects = \[\].*$": 'subjects = ["CN=console-admin.example.com"]',
}
HELD_LABEL = '\n[labels.held]\nca = "default"\nrequire_approval = true\n'


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Server:
    server = make_server(tmp_path_factory.mktemp("console"), replacements=CONSOLE_CONFIG, append=HELD_LABEL).start()
    server.token = admin_token(server, "console-tests")
    server.ca_bundle  # fetch the chain once, before tests run in parallel threads (curl, browser)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (never `playwright install`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go; the path is printed in the test report header's neighbourhood (-rA)."""
    target = os.environ.get("KIPUKA_SCREENSHOTS")
    folder = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Console:
    """A browser context on the console: its page, its JavaScript errors, and screenshots."""

    def __init__(self, srv: Server, context, shots: Path) -> None:
        self.srv = srv
        self.context = context
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.shots = shots

    @property
    def base(self) -> str:
        return f"https://localhost:{self.srv.admin_port}"

    def open(self, path: str) -> None:
        """Go to a page and wait until its first data has arrived (console.js sets body[data-ready])."""
        self.page.goto(self.base + path)
        self.page.wait_for_selector("body[data-ready]", state="attached")

    def login(self, token: str | None = None) -> None:
        self.page.goto(self.base + "/console/login")
        self.page.get_by_label("Admin token").fill(token or self.srv.token)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url(self.base + "/console/")
        self.page.wait_for_selector("body[data-ready]", state="attached")

    def status(self) -> str:
        return self.page.locator("#status").inner_text()

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def cookie(self) -> str:
        (cookie,) = [c for c in self.context.cookies() if c["name"] == "__Host-kipuka-console"]
        return cookie["value"]

    def csrf(self) -> str:
        return self.page.locator('meta[name="csrf-token"]').get_attribute("content")


@pytest.fixture
def console(srv, browser, shots):
    """A fresh browser context (no cookies) on the module's server; fails on any JavaScript error."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900},
                                  accept_downloads=True)
    c = Console(srv, context, shots)
    yield c
    context.close()
    # Refused API calls the tests make on purpose show up as "Failed to load resource"; anything
    # else (an exception, a CSP violation) is a bug in the console's JavaScript.
    assert not [e for e in c.errors if not e.startswith("Failed to load resource")], c.errors
