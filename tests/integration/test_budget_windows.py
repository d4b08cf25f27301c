"""Budgets roll over at their period's boundary, and alerts fire once per window:
the gateway used in-process (as a library) with an injected clock, in front of
`tollway simulate`."""

from __future__ import annotations

import calendar
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.helpers.gateway import free_port
from tests.helpers.sim import SimHandle
from tollway import config
from tollway.accounting.settlement import Answered, Failed
from tollway.accounting.tokens import count_request
from tollway.errors import BudgetExceeded
from tollway.gateway import Gateway
from tollway.gateway.call import Call
from tollway.policy.auth import Caller
from tollway.wire.openai import parse_chat_request

MAX_TOKENS = 50
BODY = orjson.dumps({"model": "sim", "max_tokens": MAX_TOKENS,
                     "messages": [{"role": "user", "content": "How are the numbers?"}]})
N_IN = count_request(parse_chat_request(BODY), "sim-model")
WORST_USD = (N_IN * 1.0 + MAX_TOKENS * 2.0) / 1e6


def utc(*t: int) -> float:
    return float(calendar.timegm((*t, 0, 0, 0)[:6]))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_gateway(sim: SimHandle, tmp_path: Path, clock: Clock,
                 **sections: Any) -> Gateway:
    cfg = config.parse({
        "models": {"sim": {"deployments": [{
            "provider": "openai", "model": "sim-model", "api_base": sim.openai_base,
            "api_key": "sim-key"}]}},
        "prices": {"sim-model": {"input": 1.0, "output": 2.0}},
        "store": {"path": str(tmp_path / "store")},
        **sections,
    }, env={})
    return Gateway(cfg, clock=clock)


async def call(gw: Gateway, user: str = "alice") -> bool:
    """One request through the library path; True if it was admitted."""
    req = parse_chat_request(BODY)
    c = Call("r-" + os.urandom(4).hex(), caller=Caller(user=user))
    try:
        answer = await gw.chat(c, req)
    except BudgetExceeded as e:
        await gw.finish(c, Failed(e))
        return False
    await gw.finish(c, Answered(answer))
    return True


@pytest.fixture
async def closing() -> AsyncIterator[list[Gateway]]:
    made: list[Gateway] = []
    yield made
    for gw in made:
        await gw.close()


@pytest.mark.parametrize(("period", "before", "after"), [
    ("day", utc(2026, 11, 22, 23, 59, 59), utc(2026, 11, 23)),
    ("month", utc(2026, 11, 30, 23, 59, 59), utc(2026, 12, 1)),
])
async def test_budgets_roll_over_at_the_period_boundary(
        fresh_sim: SimHandle, tmp_path: Path, closing: list[Gateway], period: str,
        before: float, after: float) -> None:
    fresh_sim.config(output_tokens=MAX_TOKENS)  # every answer costs its worst case
    clock = Clock(before)
    gw = make_gateway(fresh_sim, tmp_path, clock, budgets={
        "users": {"*": [{"usd": 2 * WORST_USD, "period": period}]}})
    closing.append(gw)
    assert [await call(gw) for _ in range(3)] == [True, True, False]
    assert await call(gw, user="bob")  # each user has their own allowance
    clock.now = after - 0.001
    assert not await call(gw)
    clock.now = after  # a new window: a new counter, nothing to reset
    assert [await call(gw) for _ in range(3)] == [True, True, False]


async def test_a_total_budget_never_rolls_over(
        fresh_sim: SimHandle, tmp_path: Path, closing: list[Gateway]) -> None:
    fresh_sim.config(output_tokens=MAX_TOKENS)
    clock = Clock(utc(2026, 11, 22, 12))
    tokens = N_IN + MAX_TOKENS
    gw = make_gateway(fresh_sim, tmp_path, clock, budgets={
        "global": [{"tokens": tokens, "period": "total"}]})
    closing.append(gw)
    assert [await call(gw), await call(gw)] == [True, False]
    clock.now += 400 * 86400
    assert not await call(gw)


async def test_alerts_fire_once_per_threshold_and_window_to_the_webhook(
        fresh_sim: SimHandle, tmp_path: Path, closing: list[Gateway]) -> None:
    fresh_sim.config(output_tokens=MAX_TOKENS)
    got: list[dict[str, Any]] = []
    failures = [1]  # the first delivery fails: the alert must be retried

    async def hook(request: web.Request) -> web.Response:
        if failures[0]:
            failures[0] -= 1
            return web.Response(status=503)
        got.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        clock = Clock(utc(2026, 11, 22, 12))
        gw = make_gateway(fresh_sim, tmp_path, clock,
                          budgets={"global": [{"usd": 4 * WORST_USD, "period": "day"}]},
                          alerts={"budget_thresholds": [0.5, 1.0],
                                  "webhook_url": f"http://127.0.0.1:{port}/hook"})
        closing.append(gw)
        for _ in range(5):  # 25%, 50% (fires 0.5), 75%, 100% (fires 1.0), refused
            await call(gw)
        clock.now = utc(2026, 11, 23, 1)
        await call(gw)  # 25% of a new window: nothing
        await call(gw)  # 50% of the new window: fires again
        await gw.alerts.close()  # deliveries under way finish
    finally:
        await runner.cleanup()
    # The retried first delivery may land after the second: compare as a set.
    assert sorted((a["window"], a["threshold"]) for a in got) == [
        ("d20261122", 0.5), ("d20261122", 1.0), ("d20261123", 0.5)]
    first = next(a for a in got if a["threshold"] == 0.5)
    assert first["scope"] == "global" and first["kind"] == "budget"
    assert "50% used" in first["message"]


async def test_hourly_spend_alert_fires_once_an_hour(
        fresh_sim: SimHandle, tmp_path: Path, closing: list[Gateway]) -> None:
    fresh_sim.config(output_tokens=MAX_TOKENS)
    clock = Clock(utc(2026, 11, 22, 9, 10))
    gw = make_gateway(fresh_sim, tmp_path, clock,
                      alerts={"hourly_spend_usd": 2 * WORST_USD * 0.99})
    closing.append(gw)
    for _ in range(4):  # crosses the line on the second request, stays past it
        await call(gw)
    clock.now = utc(2026, 11, 22, 10, 5)
    await call(gw)
    await gw.alerts.close()
    assert [a.window for a in gw.alerts.fired] == ["h2026112209"]
    await call(gw)
    await gw.alerts.close()
    assert [a.window for a in gw.alerts.fired] == ["h2026112209", "h2026112210"]
    assert all(a.kind == "hourly_spend" for a in gw.alerts.fired)
