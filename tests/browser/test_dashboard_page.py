"""The dashboard page against the gateway's own /admin/dashboard/* endpoints (built in
parallel on another branch: this file passes once they are merged). Real traffic from
two virtual keys through the openai SDK; the master sees it all — what the page shows
is what the endpoints answer —, the tail refreshes by itself and filters by key, and a
virtual key sees its own spend and requests alone. No console error, no failed
request (conftest.Watch)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, Request, expect

from tests.browser.conftest import (
    DESK,
    MASTER,
    PHONE,
    Console,
    close_console,
    console_config,
    new_console,
    screenshot,
)
from tests.helpers.admin import admin, create_key
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.raw import request
from tests.helpers.sim import SimHandle


@dataclass
class Traffic:
    gw: GatewayHandle
    keys: dict[str, tuple[str, str]]  # name -> (secret, id)

    def chat(self, name: str, request_id: str | None = None) -> str:
        """One request with that key; returns its request id."""
        rid = request_id or f"dash_{name}_{secrets.token_hex(4)}"
        got = request(self.gw.url, "POST", "/v1/chat/completions",
                      {"model": "sim", "messages": [{"role": "user", "content": rid}]},
                      {"authorization": f"Bearer {self.keys[name][0]}", "x-request-id": rid})
        assert got.status == 200, got
        return rid


@pytest.fixture(scope="module")
def traffic(sim: SimHandle) -> Iterator[Traffic]:
    gw = start_gateway(console_config(sim.url), env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        keys = {}
        for name, team in (("search-bot", "search"), ("support-bot", "support")):
            secret, rec = create_key(gw.url, MASTER, name=name, team=team, features=[team],
                                     budgets=[{"usd": 5, "period": "day"}])
            keys[name] = (secret, rec["id"])
        t = Traffic(gw, keys)
        for _ in range(3):
            t.chat("search-bot")
        t.chat("support-bot")
        yield t
    finally:
        gw.stop()


def asked(page_requests: list[Request], endpoint: str) -> str:
    """The path and query of the page's last request to /admin/dashboard/ENDPOINT."""
    r = [x for x in page_requests if urlsplit(x.url).path == f"/admin/dashboard/{endpoint}"][-1]
    url = urlsplit(r.url)
    return f"{url.path}?{url.query}" if url.query else url.path


def same_as(c: Console, path: str, headers: dict[str, str]) -> Any:
    got = request(c.gw.url, "GET", path, headers=headers)
    assert got.status == 200, got
    return got.json()


async def money(page: Page, selector: str) -> float:
    text = await page.locator(selector).inner_text()
    return float(re.sub(r"[^\d.e-]", "", text))


async def test_the_master_sees_everything_the_endpoints_answer(
        browser: Browser, traffic: Traffic, fresh_sim: SimHandle) -> None:
    c = await new_console(browser, traffic.gw, DESK)
    master = {"authorization": f"Bearer {MASTER}"}
    try:
        await c.sign_in(MASTER)
        await c.go("dashboard")
        page = c.page
        await expect(page.locator("#spend .bar").first).to_be_visible()
        spend = same_as(c, asked(c.watch.requests, "spend"), master)
        assert spend["total"]["requests"] == 4
        assert await money(page, "#spend [data-total]") == pytest.approx(
            spend["total"]["cost_usd"], rel=0.01, abs=1e-9)

        async with page.expect_request(lambda r: "stack=key" in r.url):
            await page.select_option("#stack", "key")
        await expect(page.locator("#spend .legend li")).to_have_count(2)

        stats = same_as(c, asked(c.watch.requests, "stats"), master)
        await expect(page.locator('[data-figure="requests"]')).to_contain_text(
            f"{stats['requests']:,}")
        await expect(page.locator('[data-top="key"] tr')).to_have_count(2)
        await expect(page.locator("#budgets tbody tr", has_text="of $5.00")).to_have_count(2)
        await expect(page.locator("#alerts .empty, #alerts li").first).to_be_visible()

        # The tail: every request, newest first; a new one shows up by itself.
        tail = page.locator("#tail tbody tr")
        await expect(tail).to_have_count(4)
        newest = traffic.chat("support-bot")
        await expect(tail.first).to_have_attribute("data-request-id", newest, timeout=15_000)
        support_id = traffic.keys["support-bot"][1]
        async with page.expect_request(lambda r: f"key={support_id}" in r.url):
            await page.fill('#tail input[name="key"]', support_id)
            await page.press('#tail input[name="key"]', "Tab")
        await expect(tail).to_have_count(2)
        for key_cell in await tail.locator('td[data-label="Key"]').all_inner_texts():
            assert key_cell == support_id
    finally:
        await close_console(c)


async def test_a_virtual_key_sees_its_own_spend_alone(browser: Browser, traffic: Traffic,
                                                       fresh_sim: SimHandle) -> None:
    c = await new_console(browser, traffic.gw, DESK)
    secret, key_id = traffic.keys["search-bot"]
    try:
        await c.sign_in(secret)
        await c.go("dashboard")
        page = c.page
        await expect(page.locator("#spend .bar").first).to_be_visible()
        cookie = await c.session_cookie()
        session = {"x-tollway-console": "1", "cookie": f"tollway_session={cookie['value']}"}
        own = same_as(c, asked(c.watch.requests, "spend"), session)
        everyone = admin(c.gw.url, MASTER, "GET", asked(c.watch.requests, "spend"))
        assert own["total"]["cost_usd"] < everyone["total"]["cost_usd"]
        assert await money(page, "#spend [data-total]") == pytest.approx(
            own["total"]["cost_usd"], rel=0.01, abs=1e-9)
        await expect(page.locator('[data-top="key"] tr')).to_have_count(1)
        await expect(page.locator("#tail tbody tr").first).to_be_visible()
        for key_cell in await page.locator('#tail td[data-label="Key"]').all_inner_texts():
            assert key_cell == key_id
        # Still not the key list.
        assert request(c.gw.url, "GET", "/admin/keys", headers=session).status == 403
    finally:
        await close_console(c)


@pytest.mark.parametrize("size", ["desk", "phone"])
async def test_the_dashboard_renders_at_a_desk_and_a_phone_width_with_real_data(
        browser: Browser, traffic: Traffic, size: str) -> None:
    viewport = DESK if size == "desk" else PHONE
    c = await new_console(browser, traffic.gw, viewport)
    try:
        await c.sign_in(MASTER)
        await c.go("dashboard")
        await expect(c.page.locator("#spend .bar").first).to_be_visible()
        await expect(c.page.locator("#tail tbody tr").first).to_be_visible()
        assert await c.page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        await screenshot(c.page, f"dashboard-{size}")
    finally:
        await close_console(c)
