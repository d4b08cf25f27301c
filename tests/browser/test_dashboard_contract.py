"""The dashboard page against the /admin/dashboard/* contract, its answers served by
the browser (Playwright routes) in the contract's shapes: the stacked spend chart and
its controls, the figures and top spenders, budgets, alerts, the live tail refreshing
and filtering — and the empty states, when the gateway has no such endpoints or
nothing to show. (Against the gateway's own endpoints: test_dashboard_page.py.)"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Browser, Request, Route, expect

from tests.browser.conftest import (
    DESK,
    MASTER,
    PHONE,
    Console,
    close_console,
    new_console,
    screenshot,
)
from tests.helpers.gateway import GatewayHandle

HOUR = 3600
NOW = time.time()
START = (NOW // HOUR - 23) * HOUR
MODELS = ("sim-model", "claude-sim")


def spend(stack: str) -> dict[str, Any]:
    names = MODELS if stack == "model" else ("key_search", "key_support", "key_ops")
    series = [{"t": START + i * HOUR,
               "groups": [{"name": n, "cost_usd": round(0.01 * (i % 5 + 1) * (j + 1), 4),
                           "requests": 10 + i + j}
                          for j, n in enumerate(names) if (i + j) % 4]}
              for i in range(24)]
    groups = [g for p in series for g in p["groups"]]
    return {"series": series, "total": {"cost_usd": sum(g["cost_usd"] for g in groups),
                                        "requests": sum(g["requests"] for g in groups)}}


STATS = {"requests": 1234, "errors": 12, "error_rate": 12 / 1234,
         "latency_ms": {"p50": 420.0, "p95": 1830.0}, "ttft_ms": {"p50": 95.0, "p95": 310.0},
         "cache": {"hits": 150, "hit_rate": 150 / 1234, "saved_usd": 0.42},
         "cost_usd": 3.21, "tokens": {"input": 120000, "output": 45000},
         "top": {"key": [{"name": "search-bot", "cost_usd": 2.1, "requests": 800},
                         {"name": "support-bot", "cost_usd": 1.11, "requests": 434}],
                 "user": [{"name": "ada", "cost_usd": 1.5, "requests": 300}],
                 "feature": [{"name": "search", "cost_usd": 2.1, "requests": 800}],
                 "model": [{"name": "sim-model", "cost_usd": 1.0, "requests": 900},
                           {"name": "claude-sim", "cost_usd": 2.21, "requests": 334}]}}
BUDGETS = [{"scope": "key", "name": "search-bot", "period": "day", "metric": "usd",
            "limit": 5.0, "used": 4.7, "remaining": 0.3, "resets_at": (NOW // 86400 + 1) * 86400},
           {"scope": "team", "name": "support", "period": "month", "metric": "tokens",
            "limit": 1_000_000, "used": 250_000, "remaining": 750_000, "resets_at": NOW + 9e5}]
ALERTS = {"data": [{"at": NOW - 600, "rule": "budget_80", "scope": "key search-bot",
                    "message": "search-bot has used 94 % of its daily budget"}]}


def row(i: int, **kw: Any) -> dict[str, Any]:
    return {"id": f"row_{i}", "request_id": f"req_{i}", "ts": NOW - 60 * (10 - i),
            "status": 200, "outcome": "ok", "key_id": "key_search", "model": "sim-model",
            "input_tokens": 20 + i, "output_tokens": 16, "cost_usd": 0.00005, "priced": True,
            "latency_ms": 300.0 + i, "cache": "miss", **kw}


@dataclass
class Dashboard:
    """The contract's answers, served to the page; what it asked, by endpoint."""

    status: int = 200
    empty: bool = False
    asked: dict[str, list[dict[str, list[str]]]] = field(default_factory=dict)

    def body(self, name: str, q: dict[str, list[str]]) -> Any:
        if self.empty:
            return {"spend": {"series": [], "total": {"cost_usd": 0, "requests": 0}},
                    "stats": {**STATS, "requests": 0, "top": {}}, "budgets": [],
                    "tail": {"data": [], "next": None}, "alerts": {"data": []}}[name]
        if name == "spend":
            return spend(q.get("stack", ["model"])[0])
        if name == "tail":  # a newer request shows up from the second look on
            rows = [row(3), row(2, status=429, outcome="refused", cost_usd=0), row(1)]
            return {"data": ([row(4)] if len(self.asked["tail"]) > 1 else []) + rows,
                    "next": None}
        return {"stats": STATS, "budgets": BUDGETS, "alerts": ALERTS}[name]

    async def serve(self, route: Route) -> None:
        url = urlsplit(route.request.url)
        name = url.path.rsplit("/", 1)[-1]
        q = parse_qs(url.query, keep_blank_values=True)
        self.asked.setdefault(name, []).append(q)
        if self.status != 200:
            body: Any = {"error": {"message": "No route", "type": "not_found_error",
                                   "param": None, "code": None}}
        else:
            body = self.body(name, q)
        await route.fulfill(status=self.status, content_type="application/json",
                            body=json.dumps(body))

    def last(self, name: str) -> dict[str, list[str]]:
        return self.asked[name][-1]


async def dashboard(c: Console, served: Dashboard) -> None:
    await c.page.route(re.compile(r"/admin/dashboard/"), served.serve)
    await c.sign_in(MASTER)
    await c.go("dashboard")


def asking(endpoint: str, **params: str) -> Callable[[Request], bool]:
    """A request of the page to /admin/dashboard/ENDPOINT with these parameters."""
    def match(r: Request) -> bool:
        url = urlsplit(r.url)
        q = parse_qs(url.query)
        return (url.path == f"/admin/dashboard/{endpoint}"
                and all(q.get(k) == [v] for k, v in params.items()))
    return match


async def test_the_dashboard_draws_what_the_contract_answers(console: Console) -> None:
    c, served = console, Dashboard()
    await dashboard(c, served)
    page = c.page
    expected = spend("model")
    drawn = sum(1 for p in expected["series"] for g in p["groups"] if g["cost_usd"] > 0)
    await expect(page.locator("#spend .bar")).to_have_count(drawn)
    await expect(page.locator("#spend .legend li")).to_have_text(list(reversed(MODELS)))
    total = await page.locator("#spend [data-total]").inner_text()
    assert float(total.lstrip("$")) == pytest.approx(expected["total"]["cost_usd"], abs=0.005)
    asked = served.last("spend")
    assert asked["bucket"] == ["hour"] and asked["stack"] == ["model"]
    since, until = (datetime.fromisoformat(asked[k][0]) for k in ("since", "until"))
    assert (until - since).total_seconds() == pytest.approx(86400, abs=1)

    # Stacked by key, over 7 days by day: asked again, drawn again.
    async with page.expect_request(asking("spend", stack="key")):
        await page.select_option("#stack", "key")
    await expect(page.locator("#spend .legend li")).to_have_count(3)
    async with page.expect_request(asking("spend", stack="key", bucket="day")):
        await page.select_option("#range", "7d")
    await expect(page.locator("#bucket")).to_have_value("day")

    figures = page.locator("#stats")
    await expect(figures.locator('[data-figure="requests"]')).to_contain_text("1,234")
    await expect(figures.locator('[data-figure="errors"]')).to_contain_text("12 (1.0 %)")
    await expect(figures.locator('[data-figure="latency"]')).to_contain_text("420 ms / 1.83 s")
    await expect(figures.locator('[data-figure="ttft"]')).to_contain_text("95 ms / 310 ms")
    await expect(figures.locator('[data-figure="cache"]')).to_contain_text("150 (12.2 %)")
    await expect(figures.locator('[data-figure="cost"]')).to_contain_text("$3.21")
    await expect(page.locator('[data-top="key"] tr')).to_have_count(2)
    await expect(page.locator('[data-top="key"] tr').first).to_contain_text("search-bot")
    await expect(page.locator('[data-top="model"] tr')).to_have_count(2)

    await expect(page.locator("#budgets tbody tr")).to_have_count(2)
    await expect(page.locator('[data-budget="key/search-bot"]')).to_contain_text(
        "$4.70 of $5.00")
    await expect(page.locator("#budgets .meter-fill.hot")).to_have_count(1)  # 94 % used
    await expect(page.locator("#alerts li")).to_contain_text("94 % of its daily budget")

    # The tail: newest first, refreshed by itself, filtered when asked.
    tail = page.locator("#tail tbody tr")
    await expect(tail).to_have_count(3)
    await expect(page.locator('#tail tr[data-request-id="req_2"]')).to_have_class("failed")
    await expect(tail.first).to_have_attribute("data-request-id", "req_4", timeout=10_000)
    async with page.expect_request(asking("tail", limit="50", model="sim-model")):
        await page.fill('#tail input[name="model"]', "sim-model")
        await page.press('#tail input[name="model"]', "Tab")  # a change event


async def test_the_dashboard_says_so_when_there_is_nothing_or_no_endpoint(
        console: Console) -> None:
    c, served = console, Dashboard(empty=True)
    await dashboard(c, served)
    await expect(c.page.locator("#spend")).to_contain_text("No spend in this range.")
    await expect(c.page.locator("#budgets")).to_contain_text("No budgets apply.")
    await expect(c.page.locator("#alerts")).to_contain_text("No alerts.")
    await expect(c.page.locator("#tail")).to_contain_text("No requests match.")
    await expect(c.page.locator('[data-top="key"]')).to_contain_text("Nothing yet.")

    # A gateway without the endpoints: each panel says so.
    served.status, served.empty = 404, False
    c.watch.expect(404, "/admin/dashboard/")
    await c.go("playground")
    await c.go("dashboard")
    for panel in ("spend", "stats", "top", "budgets", "alerts", "tail"):
        await expect(c.page.locator(f"#{panel}")).to_contain_text(
            "Not available on this gateway yet.")


@pytest.mark.parametrize("size", ["desk", "phone"])
async def test_the_dashboard_renders_at_a_desk_and_a_phone_width(
        browser: Browser, cgw: GatewayHandle, size: str) -> None:
    viewport = DESK if size == "desk" else PHONE
    c = await new_console(browser, cgw, viewport)
    try:
        await dashboard(c, Dashboard())
        await expect(c.page.locator("#spend .bar").first).to_be_visible()
        await expect(c.page.locator("#tail tbody tr")).to_have_count(3)
        assert await c.page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        await screenshot(c.page, f"dashboard-{size}")
    finally:
        await close_console(c)
