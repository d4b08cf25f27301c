"""Resilience against `tollway simulate` upstreams: fallbacks past a rate-limited
primary, circuit breakers through an outage and its recovery, what is never retried,
outbound back-pressure and inbound rate limits — through the openai SDK."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.helpers.admin import ledger_rows
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle, start_simulator

MASTER = "master-" + os.urandom(8).hex()
MAX_SECONDS = 5.0
MIN_REQUESTS, COOLDOWN, PROBES, BUDGET = 5, 1.0, 1, 0.2


@pytest.fixture(scope="module")
def primary() -> Iterator[SimHandle]:
    with start_simulator() as s:
        yield s


@pytest.fixture(scope="module")
def flaky() -> Iterator[SimHandle]:
    with start_simulator() as s:
        yield s


def dep(sim: SimHandle, model: str, **kw: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": model, "api_base": sim.openai_base,
            "api_key": "k", **kw}


@pytest.fixture(scope="module")
def rgw(sim: SimHandle, primary: SimHandle, flaky: SimHandle) -> Iterator[GatewayHandle]:
    config = {
        "routing": {
            "retry": {"max_attempts": 3, "max_seconds": MAX_SECONDS, "base_delay": 0.05,
                      "max_delay": 0.2, "max_retry_after": 2, "budget": BUDGET,
                      "budget_floor": 0},
            "breaker": {"window_seconds": 10, "min_requests": MIN_REQUESTS,
                        "failure_rate": 0.5, "cooldown_seconds": COOLDOWN,
                        "half_open_probes": PROBES}},
        "models": {
            "chat": {"deployments": [dep(primary, "primary-model"),
                                     dep(sim, "backup-model", priority=1)]},
            "flaky": {"deployments": [dep(flaky, "flaky-model")]},
            "plain": {"deployments": [dep(sim, "plain-model")]},
            "paced": {"deployments": [dep(sim, "paced-model", pacing={
                "rpm": 5, "max_queue": 2, "max_wait_seconds": 1})]},
            "limited": {"deployments": [dep(sim, "limited-model")]},
            "learned": {"deployments": [dep(primary, "learned-model")]},
            "balanced": {"deployments": [dep(primary, "heavy-model", weight=3),
                                         dep(flaky, "light-model", weight=1)]},
        },
        "rate_limits": {"models": {"limited": {"rpm": 30}}},
        "server": {"max_n": 200},
    }
    handle = start_gateway(config, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


def client(gw: GatewayHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=MASTER, max_retries=0, timeout=30)


def upstream_state(gw: GatewayHandle, alias: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{gw.url}/health/ready", timeout=10) as r:
        rows: list[dict[str, Any]] = json.loads(r.read())["upstreams"][alias]
    return rows


MESSAGES: Any = [{"role": "user", "content": "hello"}]


async def test_a_rate_limited_primary_falls_back_and_its_breaker_keeps_traffic_off_it(
        rgw: GatewayHandle, primary: SimHandle, fresh_sim: SimHandle) -> None:
    primary.reset()
    primary.config(rate_429=1.0, retry_after=30)  # longer than we would wait
    c = client(rgw)
    sem = asyncio.Semaphore(25)
    latencies: list[float] = []
    models: list[str] = []

    async def one() -> bool:
        async with sem:
            t0 = time.monotonic()
            try:
                raw = await c.chat.completions.with_raw_response.create(
                    model="chat", messages=MESSAGES, max_tokens=5)
            except openai.APIError:
                return False
            finally:
                latencies.append(time.monotonic() - t0)
            models.append(raw.headers["x-tollway-model"])
            return True

    t0 = time.monotonic()
    ok = await asyncio.gather(*(one() for _ in range(1000)))
    elapsed = time.monotonic() - t0
    await c.close()
    assert sum(ok) >= 999
    assert set(models) == {"backup-model"}
    assert max(latencies) < MAX_SECONDS
    # The primary saw the calls that opened its breaker (at most the 25 in flight when
    # it opened) and one probe per cooldown after that — nothing while it was open.
    calls = primary.stats()["requests"]
    assert calls <= MIN_REQUESTS + 25 + PROBES * (elapsed / COOLDOWN + 1), (calls, elapsed)
    assert upstream_state(rgw, "chat")[0]["breaker"] in ("open", "half_open")


async def test_an_outage_opens_the_breaker_probes_and_closes_after_recovery(
        rgw: GatewayHandle, flaky: SimHandle) -> None:
    flaky.reset()
    flaky.config(rate_500=1.0)
    c = client(rgw)
    statuses: list[int] = []

    async def burst(n: int) -> None:
        for _ in range(n):
            try:
                await c.chat.completions.create(model="flaky", messages=MESSAGES, max_tokens=5)
                statuses.append(200)
            except openai.APIStatusError as e:
                statuses.append(e.status_code)
                if e.status_code == 503:
                    assert e.response.headers.get("retry-after")

    await burst(40)
    assert upstream_state(rgw, "flaky")[0]["breaker"] == "open"
    assert 503 in statuses and 200 not in statuses  # fast refusals while open
    calls_during_outage = flaky.stats()["requests"]
    flaky.config(rate_500=0.0)
    deadline = time.monotonic() + 5
    while upstream_state(rgw, "flaky")[0]["breaker"] == "open":  # cooldown passing
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await burst(20)
    await c.close()
    assert statuses[-20:] == [200] * 20  # the probe succeeded; closed again
    assert upstream_state(rgw, "flaky")[0]["breaker"] == "closed"
    total_calls = flaky.stats()["requests"]
    assert total_calls <= (1 + BUDGET) * len(statuses), (total_calls, len(statuses))
    assert calls_during_outage < 40  # the open breaker refused without calling
    rows = [r for r in ledger_rows(rgw.url, MASTER) if r.get("model") == "flaky-model"]
    assert rows and max(r["retries"] for r in rows) <= 2  # attempts capped at 3


async def test_client_errors_are_never_retried(rgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(rgw)
    with pytest.raises(openai.BadRequestError):
        await c.chat.completions.create(  # the gateway allows n up to 200, the upstream 128
            model="plain", messages=MESSAGES, n=150, max_tokens=1)
    assert fresh_sim.stats()["requests"] == 1
    await c.close()


async def test_a_stream_that_has_sent_bytes_is_never_retried(
        rgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    fresh_sim.config(next_faults=["drop_stream"], output_tokens=40)
    c = client(rgw)
    got = 0
    with pytest.raises(openai.APIError):
        stream = await c.chat.completions.create(model="plain", messages=MESSAGES, stream=True)
        async for chunk in stream:
            got += bool(chunk.choices and chunk.choices[0].delta.content)
    await c.close()
    assert got > 0
    assert fresh_sim.stats()["requests"] == 1


async def test_a_full_outbound_queue_answers_503_at_once(
        rgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(rgw)

    async def one() -> tuple[int, str | None, float]:
        t0 = time.monotonic()
        try:
            await c.chat.completions.create(model="paced", messages=MESSAGES, max_tokens=5)
            return 200, None, time.monotonic() - t0
        except openai.APIStatusError as e:
            return e.status_code, e.response.headers.get("retry-after"), time.monotonic() - t0

    results = await asyncio.gather(*(one() for _ in range(12)))
    await c.close()
    assert sorted(s for s, _, _ in results) == [200] * 5 + [503] * 7
    assert all(ra is not None and int(ra) >= 1 for s, ra, _ in results if s == 503)
    assert max(t for _, _, t in results) < 2.0  # nobody waited for a minute-long window
    assert fresh_sim.stats()["requests"] == 5


async def test_inbound_rate_limit_refuses_the_excess_with_openai_headers(
        rgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(rgw)
    remaining: list[int] = []
    refused: list[openai.RateLimitError] = []
    for _ in range(40):
        try:
            raw = await c.chat.completions.with_raw_response.create(
                model="limited", messages=MESSAGES, max_tokens=5)
            remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
            assert raw.headers["x-ratelimit-limit-requests"] == "30"
        except openai.RateLimitError as e:
            refused.append(e)
    await c.close()
    assert remaining == list(range(29, -1, -1))
    assert len(refused) == 10
    h = refused[0].response.headers
    assert h["x-ratelimit-limit-requests"] == "30" and h["x-ratelimit-remaining-requests"] == "0"
    assert int(h["retry-after"]) >= 1 and h["x-ratelimit-reset-requests"].endswith("s")
    assert "Rate limit reached for model 'limited'" in refused[0].message
    assert fresh_sim.stats()["requests"] == 30


async def test_outbound_pacing_learns_the_providers_limit_from_its_headers(
        rgw: GatewayHandle, primary: SimHandle) -> None:
    """No limit configured: the provider's x-ratelimit-* headers say 5 a minute, and
    the gateway stops sending at 5 — the provider never has to refuse one."""
    primary.reset()
    primary.config(rate_429=0.0, rpm_limit=5)
    c = client(rgw)
    statuses = []
    for _ in range(8):
        try:
            await c.chat.completions.create(model="learned", messages=MESSAGES, max_tokens=5)
            statuses.append(200)
        except openai.APIStatusError as e:
            statuses.append(e.status_code)
            assert int(e.response.headers["retry-after"]) >= 1
    await c.close()
    primary.config(rpm_limit=None)
    assert statuses == [200] * 5 + [503] * 3
    stats = primary.stats()
    assert stats["requests"] == 5 and stats["rate_limited"] == 0


async def test_load_is_shared_by_weight(rgw: GatewayHandle, primary: SimHandle,
                                        flaky: SimHandle) -> None:
    for s in (primary, flaky):
        s.reset()
        s.config(rate_429=0.0, rate_500=0.0, rpm_limit=None)
    c = client(rgw)
    for _ in range(300):
        await c.chat.completions.create(model="balanced", messages=MESSAGES, max_tokens=5)
    await c.close()
    heavy = primary.stats()["requests_by_model"]["heavy-model"]
    light = flaky.stats()["requests_by_model"]["light-model"]
    assert heavy + light == 300
    assert 0.65 <= heavy / 300 <= 0.85, (heavy, light)  # weights 3:1
