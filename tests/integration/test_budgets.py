"""Virtual keys, budgets reserved before and settled after, the ledger, and metrics,
against a real gateway in front of `tollway simulate`, through the openai SDK."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from tests.conftest import gateway_config
from tests.helpers.admin import admin, create_key, ledger_rows
from tests.helpers.clients import abandon_stream
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle
from tollway.accounting.tokens import count_request
from tollway.wire.openai import parse_chat_request

MASTER = "master-" + os.urandom(12).hex()
PROVIDER_KEY = "sk-provider-" + os.urandom(16).hex()
PRICE_IN, PRICE_OUT = 1.0, 2.0  # USD per 1M tokens of sim-model
BIG_IN, BIG_OUT = 10.0, 20.0  # sim-model-big
MAX_TOKENS = 100
CONV_MESSAGES = [{"role": "user", "content": "Keep going."}]


def budget_config(sim_url: str) -> dict[str, Any]:
    cfg = gateway_config(sim_url)
    for mc in cfg["models"].values():  # type: ignore[attr-defined]
        for dep in mc["deployments"]:
            if dep["api_key"] == "sim-key":
                dep["api_key"] = PROVIDER_KEY
    cfg["models"]["sim-big"] = {"deployments": [  # type: ignore[index]
        {"provider": "openai", "model": "sim-model-big", "api_base": f"{sim_url}/v1",
         "api_key": PROVIDER_KEY}]}
    cfg["prices"] = {"sim-model": {"input": PRICE_IN, "output": PRICE_OUT},
                     "sim-model-big": {"input": BIG_IN, "output": BIG_OUT}}
    cfg["tiers"] = {"complex": {"model": "sim-big"}, "standard": {"model": "sim"}}
    conv_cap = 3 * (input_tokens(CONV_MESSAGES) + MAX_TOKENS)
    cfg["budgets"] = {"teams": {"frugal": [{"usd": 0.005, "period": "day"}]},
                      "conversations": [{"tokens": conv_cap, "period": "total"}],
                      "downgrade": [{"at": 0.5, "from": "complex", "to": "standard"}]}
    return cfg


@pytest.fixture(scope="module")
def bgw(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway(budget_config(sim.url), env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


def input_tokens(messages: list[dict[str, str]], model: str = "sim-model") -> int:
    import orjson

    return count_request(parse_chat_request(orjson.dumps(
        {"model": "sim", "messages": messages})), model)


def worst_usd(n_in: int, p_in: float = PRICE_IN, p_out: float = PRICE_OUT) -> float:
    return (n_in * p_in + MAX_TOKENS * p_out) / 1e6


def client(gw: GatewayHandle, key: str, connections: int = 10) -> openai.AsyncOpenAI:
    http = openai.DefaultAsyncHttpx2Client(limits=httpx2.Limits(
        max_connections=connections, max_keepalive_connections=connections))
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0,
                              http_client=http)


def rows_for(gw: GatewayHandle, **match: Any) -> list[dict[str, Any]]:
    return [r for r in ledger_rows(gw.url, MASTER)
            if all(r.get(k) == v for k, v in match.items())]


async def test_concurrent_requests_never_overshoot_a_key_budget(
        bgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    # Every answer uses its whole max_tokens, so each admitted request really costs
    # its worst case and exactly 10 fit, however the 300 interleave.
    fresh_sim.config(output_tokens=MAX_TOKENS, ttft_ms=20)
    messages = [{"role": "user", "content": "What does this cost?"}]
    limit = 10 * worst_usd(input_tokens(messages))
    secret, rec = create_key(bgw.url, MASTER, name="load", features=["load"],
                             budgets=[{"usd": limit, "period": "day"}])
    c = client(bgw, secret, connections=300)

    async def one() -> Any:
        return await c.chat.completions.create(model="sim", messages=messages,  # type: ignore[arg-type]
                                               max_tokens=MAX_TOKENS)

    results = await asyncio.gather(*(one() for _ in range(300)), return_exceptions=True)
    await c.close()
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(admitted) == 10 and len(refused) == 290, [
        r for r in results if isinstance(r, BaseException)
        and not isinstance(r, openai.RateLimitError)][:3]
    err = refused[0]
    assert err.response.headers["x-should-retry"] == "false"
    assert "Budget exceeded: the daily dollar budget of key" in err.message
    assert "resets at" in err.message and "left" in err.message
    assert fresh_sim.stats()["requests"] == 10

    rows = rows_for(bgw, key_id=rec["id"])
    assert len(rows) == 300  # one row per request sent, refusals included
    assert sum(r["outcome"] == "ok" for r in rows) == 10
    assert all(r["status"] == 429 and r["error"] == "budget_exceeded"
               for r in rows if r["outcome"] == "refused")
    spent = sum(r["cost_usd"] for r in rows)
    assert spent <= limit * (1 + 1e-9)
    assert spent == pytest.approx(limit)


async def wait_rows(gw: GatewayHandle, request_id: str) -> list[dict[str, Any]]:
    """Rows are written when the gateway finishes the request, a moment after the
    client hung up; poll the ledger (another process: no event to await)."""
    deadline = time.monotonic() + 5
    while True:
        rows = rows_for(gw, request_id=request_id)
        if rows or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def test_an_aborted_stream_is_billed_once_for_what_was_generated(
        bgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    fresh_sim.config(token_ms=20, output_tokens=200)
    secret, rec = create_key(bgw.url, MASTER, budgets=[{"usd": 1.0, "period": "day"}])
    rid = "abort-" + os.urandom(6).hex()
    messages = [{"role": "user", "content": "tell me a long story"}]
    body = {"model": "sim", "stream": True, "max_tokens": 200, "messages": messages}
    await abandon_stream(f"{bgw.base_url}/chat/completions", body, {
        "authorization": f"Bearer {secret}", "x-request-id": rid}, 6)
    stats = fresh_sim.wait_for(lambda st: st["streams_cancelled"] >= 1, timeout=5)
    (row,) = await wait_rows(bgw, rid)
    assert row["outcome"] == "aborted" and row["status"] == 499 and row["stream"]
    assert row["estimated"]
    n_in = input_tokens(messages)
    assert row["input_tokens"] == n_in
    # At least what the upstream generated (issue 17: the tokens in flight when the
    # connection closed count too), at least the 5 content frames the client read, and
    # never more than the request's max_tokens.
    assert max(5, stats["tokens_generated"]) <= row["output_tokens"] <= 200
    cost = (n_in * PRICE_IN + row["output_tokens"] * PRICE_OUT) / 1e6
    assert row["cost_usd"] == pytest.approx(cost)
    # The hold was settled to that cost: the metrics show the key's budget less it.
    metrics = bgw.metrics()
    line = next(x for x in metrics.splitlines() if x.startswith("tollway_budget_remaining{")
                and f'name="{rec["lineage"]}"' in x)
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(1.0 - cost)


async def test_budget_nearly_spent_downgrades_the_tier_and_says_so(
        bgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    fresh_sim.config(output_tokens=MAX_TOKENS)
    secret, _ = create_key(bgw.url, MASTER, team="frugal")
    c = client(bgw, secret)
    messages = [{"role": "user", "content": "A hard question."}]
    seen = []
    for _ in range(3):
        raw = await c.chat.completions.with_raw_response.create(
            model="tier:complex", messages=messages, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
        seen.append((raw.headers["x-tollway-model"], raw.headers.get("x-tollway-downgraded-from"),
                     raw.headers.get("x-tollway-downgrade-reason")))
    await c.close()
    # $0.005/day team budget; a complex answer costs ~$0.0021: 42% after one, 85% after
    # two (past the 50% rule), so the third goes to the standard tier.
    assert seen == [("sim-model-big", None, None), ("sim-model-big", None, None),
                    ("sim-model", "complex", "budget")]


async def test_keys_and_provider_keys_never_reach_logs_errors_or_the_ledger(
        bgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    good, _ = create_key(bgw.url, MASTER, name="leakcheck")
    revoked, rec = create_key(bgw.url, MASTER)
    admin(bgw.url, MASTER, "POST", f"/admin/keys/{rec['id']}/revoke")
    messages = [{"role": "user", "content": "hi"}]
    bodies: list[str] = []
    c = client(bgw, good)
    await c.chat.completions.create(model="sim", messages=messages)  # type: ignore[arg-type]
    stream = await c.chat.completions.create(model="sim", messages=messages,  # type: ignore[arg-type]
                                             stream=True)
    async for _ in stream:
        pass
    # The upstream rejects our provider key and echoes it back in full.
    fresh_sim.config(require_key="something-else")
    with pytest.raises(openai.APIStatusError) as upstream:
        await c.chat.completions.create(model="sim", messages=messages)  # type: ignore[arg-type]
    bodies.append(upstream.value.response.text)
    assert upstream.value.status_code == 502 and "[redacted]" in upstream.value.message
    fresh_sim.config(require_key=None)
    await c.close()
    for key in (revoked, good + "x", "sk-not-a-tollway-key-123456"):
        bad = client(bgw, key)
        with pytest.raises(openai.AuthenticationError) as e:
            await bad.chat.completions.create(model="sim", messages=messages)  # type: ignore[arg-type]
        bodies.append(e.value.response.text)
        await bad.close()
    assert "has been revoked" in bodies[1]

    written = [bgw.log(), *bodies, str(ledger_rows(bgw.url, MASTER))]
    store = bgw.workdir / ".tollway"
    written += [p.read_bytes().decode("latin-1") for p in store.iterdir() if p.is_file()]
    for secret in (PROVIDER_KEY, good, revoked, MASTER):
        assert not any(secret in text for text in written), secret[:8]


def test_metrics_count_requests_tokens_and_dollars(bgw: GatewayHandle) -> None:
    text = bgw.metrics()
    assert ('tollway_requests_total{model="sim-model",outcome="ok",provider="openai",'
            'status="200"}') in text
    assert "tollway_cost_usd_total{" in text and "tollway_request_seconds_bucket{" in text
    assert "tollway_time_to_first_token_seconds_bucket{" in text
    assert 'tollway_tokens_total{kind="output",model="sim-model",provider="openai"}' in text


async def test_the_anthropic_sdk_authenticates_with_x_api_key(
        bgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    import anthropic

    secret, rec = create_key(bgw.url, MASTER, name="claude-app", features=["assist"])
    c = anthropic.AsyncAnthropic(base_url=bgw.url, api_key=secret, max_retries=0)
    rid = "anth-" + os.urandom(6).hex()
    msg = await c.messages.create(model="sim", max_tokens=20, extra_headers={"x-request-id": rid},
                                  messages=[{"role": "user", "content": "hello"}])
    assert msg.content
    bad = anthropic.AsyncAnthropic(base_url=bgw.url, api_key="tw-nope-nope-nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        await bad.messages.create(model="sim", max_tokens=20,
                                  messages=[{"role": "user", "content": "hello"}])
    await c.close()
    await bad.close()
    (row,) = rows_for(bgw, request_id=rid)
    assert (row["key_id"], row["feature"], row["outcome"]) == (rec["id"], "assist", "ok")


async def test_a_conversation_cap_stops_a_runaway_session(
        bgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    """One stuck session cannot spend past its cap (three turns' worth of tokens); a
    new conversation on the same key still works."""
    fresh_sim.config(output_tokens=MAX_TOKENS)
    secret, _ = create_key(bgw.url, MASTER)
    c = client(bgw, secret)

    async def turn(conversation: str) -> bool:
        try:
            await c.chat.completions.create(
                model="sim", messages=CONV_MESSAGES, max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
                extra_headers={"x-tollway-conversation-id": conversation})
        except openai.RateLimitError as e:
            assert f"conversation '{conversation}'" in e.message
            assert "total token budget" in e.message and "does not reset" in e.message
            return False
        return True

    stuck, fresh = "conv-" + os.urandom(4).hex(), "conv-" + os.urandom(4).hex()
    assert [await turn(stuck) for _ in range(4)] == [True, True, True, False]
    assert await turn(fresh)
    await c.close()
