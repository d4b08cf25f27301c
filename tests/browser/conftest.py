"""The console in a real headless browser: Playwright for Python driving Debian's
`chromium` (its executable, never a browser Playwright downloads; .ci/chromium.sh
installs it), against `tollway serve` with a master key in front of the session's
`tollway simulate`.

Every page a test opens is watched (`Watch`): a console error, an uncaught exception,
a failed request or a 4xx/5xx answer fails the test, unless the test said it expects
that one (a stream it stops, a wrong key it types).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    async_playwright,
    expect,
)

from tests.conftest import cache_config
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle

MASTER = "master-" + secrets.token_hex(16)
DESK = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Test artifacts (not tracked): the README's, docs/screenshots/, are refreshed on purpose
# with TOLLWAY_SCREENSHOTS=docs/screenshots (a run's times and ids differ every time).
SCREENSHOTS = Path(os.environ.get("TOLLWAY_SCREENSHOTS") or
                   Path(__file__).resolve().parents[1] / "artifacts" / "screenshots")
PRICES = {"sim-model": {"input": 1.0, "output": 2.0},  # USD per 1M tokens
          "claude-sim": {"input": 3.0, "output": 15.0}}


def console_config(sim_url: str) -> dict[str, Any]:
    """The test gateway with what a reply can tell about itself switched on: prices,
    the cache, a PII guard, and tiers that move a short question to the cheap one."""
    cfg = cache_config(sim_url)
    cfg["prices"] = PRICES
    cfg["guards"] = {"pii": "redact"}
    cfg["tiers"] = {"cheap": {"model": "sim"}, "strong": {"model": "sim-claude"}}
    cfg["auto_downgrade"] = {"enabled": True, "max_input_tokens": 50, "to": "cheap"}
    return cfg


@pytest.fixture(scope="session")
def cgw(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway(console_config(sim.url), env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: run .ci/chromium.sh (make test does)"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Watch:
    """What went wrong on a page. `expect(status, path)` allows an answer a test
    provokes (and the console line Chromium logs for it); `expect_abort(path)` a
    request the test aborts."""

    problems: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    # The test is loading a page anew: what the old one still loaded (its icon) is
    # aborted by that, not failed.
    leaving: bool = False
    _statuses: list[tuple[int, str]] = field(default_factory=list)
    _aborts: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("request", lambda r: self.requests.append(r))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def expect(self, status: int, path: str) -> None:
        self._statuses.append((status, path))

    def expect_abort(self, path: str) -> None:
        self._aborts.append(path)

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type not in ("error", "warning"):
            return
        m = re.search(r"status of (\d+)", msg.text)
        if m and any(int(m.group(1)) == s for s, _ in self._statuses):
            return  # the console line for an answer the test provoked
        self.problems.append(f"console {msg.type}: {msg.text}")

    def _failed(self, request: Request) -> None:
        if request.failure == "net::ERR_ABORTED" and (
                self.leaving or any(p in request.url for p in self._aborts)):
            return
        self.problems.append(f"failed: {request.method} {request.url} ({request.failure})")

    def _response(self, response: Response) -> None:
        if response.status < 400:
            return
        if any(response.status == s and p in response.url for s, p in self._statuses):
            return
        self.problems.append(f"answered {response.status}: {response.request.method} "
                             f"{response.url}")


@dataclass
class Console:
    """A browser tab on the console, watched."""

    gw: GatewayHandle
    context: BrowserContext
    page: Page
    watch: Watch

    async def open(self, route: str = "") -> None:
        await self._load(self.page.goto(f"{self.gw.url}/{route}"))

    async def reload(self) -> None:
        await self._load(self.page.reload())

    async def _load(self, loading: Awaitable[Any]) -> None:
        self.watch.leaving = True
        try:
            await loading
        finally:
            self.watch.leaving = False

    async def sign_in(self, key: str) -> None:
        await self.open()
        await self.page.fill("#key", key)
        await self.page.click("form.sign-in button[type=submit]")
        await expect(self.page.locator("#who .signed-in")).to_be_visible()

    async def go(self, page: str) -> None:
        """To another page of the console, by its menu (a page of the app, not a load)."""
        await self.page.click(f'#nav a[data-page="{page}"]')
        await expect(self.page.locator(f'#nav a[data-page="{page}"]')).to_have_class(
            re.compile(r"\bactive\b"))

    async def session_cookie(self) -> dict[str, Any]:
        found = [c for c in await self.context.cookies() if c["name"] == "tollway_session"]
        assert len(found) == 1, found
        return dict(found[0])


async def new_console(browser: Browser, gw: GatewayHandle, viewport: dict[str, int]
                      ) -> Console:
    context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = await context.new_page()
    watch = Watch()
    watch.attach(page)
    return Console(gw, context, page, watch)


async def screenshot(page: Page, name: str) -> None:
    """SCREENSHOTS/NAME.png, the whole page (Playwright makes the directory)."""
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


async def close_console(c: Console) -> None:
    """Closes the tab; the test fails if anything went wrong on it (before it closed:
    closing aborts what is still loading)."""
    problems = list(c.watch.problems)
    await c.context.close()
    assert problems == [], "\n".join(problems)


@pytest.fixture
async def console(browser: Browser, cgw: GatewayHandle) -> AsyncIterator[Console]:
    c = await new_console(browser, cgw, DESK)
    try:
        yield c
    finally:
        await close_console(c)
