"""Provider prompt caching used on purpose (issue 19): a 20-turn conversation through
the gateway to the simulator, on an OpenAI deployment (automatic prefix caching) and
an Anthropic one (the gateway's cache_control breakpoints). The stepped history window
keeps the prefix stable, so most turns read it from the cache; a one-turn sliding
window changes it every turn once full, so few do. The ledger and the cost header price
cached tokens at the cached rate (and Anthropic's cache writes at theirs)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import gateway_config
from tests.helpers.admin import ledger_rows
from tests.helpers.clients import track
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle, start_simulator
from tollway.accounting.prices import cost, load_table
from tollway.types import Usage

MASTER = "master-" + os.urandom(12).hex()
TURNS = 20
WINDOW = 3000
SYSTEM = "You are the support assistant of a bicycle shop. Answer briefly."
WORDS = ["wheel", "spoke", "brake", "chain", "gear", "tyre", "frame", "saddle", "pedal",
         "bell", "lamp", "lock", "order", "refund", "delivery", "warranty"]


@pytest.fixture(scope="module")
def csim() -> Iterator[SimHandle]:
    with start_simulator(output_tokens=150) as s:
        yield s


@pytest.fixture(scope="module")
def cgw(csim: SimHandle) -> Iterator[GatewayHandle]:
    cfg = gateway_config(csim.url)
    models = cfg["models"]
    assert isinstance(models, dict)

    def alias(provider: str, model: str, step: float) -> dict[str, Any]:
        base = f"{csim.url}/v1" if provider == "openai" else csim.url
        return {"deployments": [{"provider": provider, "model": model, "api_base": base,
                                 "api_key": "sim-key"}],
                "history": {"policy": "window", "window_tokens": WINDOW,
                            "window_step": step}}

    models["oa-stable"] = alias("openai", "gpt-4o", 0.5)  # the default step
    models["oa-slide"] = alias("openai", "gpt-4o", 0)
    models["cl-stable"] = alias("anthropic", "claude-haiku-4-5", 0.5)
    models["cl-slide"] = alias("anthropic", "claude-haiku-4-5", 0)
    cfg["server"] = {**cfg["server"], "max_tokens_cap": 400}  # type: ignore[dict-item]
    handle = start_gateway(cfg, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


async def converse(gw: GatewayHandle, model: str, seed: int) -> list[Any]:
    """TURNS turns, the client resending the whole history; the raw replies."""
    c = track(openai.AsyncOpenAI(base_url=gw.base_url, api_key=MASTER, max_retries=0))
    rng = random.Random(seed)
    messages: list[Any] = [{"role": "system", "content": SYSTEM}]
    raws = []
    for turn in range(TURNS):
        question = f"Question {turn} of conversation {seed}: " + " ".join(
            rng.choice(WORDS) for _ in range(250))
        messages.append({"role": "user", "content": question})
        raw = await c.chat.completions.with_raw_response.create(
            model=model, messages=messages, max_tokens=200)
        reply = raw.parse()
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
        raws.append(raw)
    return raws


def usage_of(raw: Any) -> Usage:
    u = raw.parse().usage
    return Usage.from_openai(u.model_dump())


@pytest.mark.parametrize(("stable", "slide", "model"), [
    ("oa-stable", "oa-slide", "gpt-4o"), ("cl-stable", "cl-slide", "claude-haiku-4-5")])
async def test_a_stable_prefix_is_served_from_the_provider_cache_and_priced_so(
        cgw: GatewayHandle, csim: SimHandle, stable: str, slide: str, model: str) -> None:
    csim.reset()
    kept = await converse(cgw, stable, seed=1)
    slid = await converse(cgw, slide, seed=2)
    kept_usage = [usage_of(r) for r in kept]
    slid_usage = [usage_of(r) for r in slid]
    kept_hits = sum(u.cached_tokens > 0 for u in kept_usage)
    slid_hits = sum(u.cached_tokens > 0 for u in slid_usage)
    kept_share = sum(u.cached_tokens for u in kept_usage) / sum(
        u.prompt_tokens for u in kept_usage)
    slid_share = sum(u.cached_tokens for u in slid_usage) / sum(
        u.prompt_tokens for u in slid_usage)
    assert kept_hits > TURNS // 2, (kept_hits, [u.cached_tokens for u in kept_usage])
    assert slid_hits <= TURNS // 4, (slid_hits, [u.cached_tokens for u in slid_usage])
    assert kept_share > 0.5 > 0.2 > slid_share, (kept_share, slid_share)
    if model.startswith("claude"):  # the gateway placed the breakpoints
        body = csim.stats()["recent_requests"][-1]["body"]
        assert body["messages"][-2]["content"][-1]["cache_control"] == {"type": "ephemeral"}
        assert any(u.cache_write_tokens for u in kept_usage)
    # The simulator's own per-model account agrees with what the caller was told.
    by_model = csim.stats()["by_model"][model]
    assert by_model["requests"] == 2 * TURNS
    assert by_model["cached_tokens"] == sum(u.cached_tokens for u in kept_usage + slid_usage)
    # Priced at the cached rate (and cache writes at theirs): the header and the ledger.
    price = load_table().get(model)
    assert price is not None and price.cached_input < price.input
    rows = {r["request_id"]: r for r in ledger_rows(cgw.url, MASTER)}
    for raw, u in zip(kept + slid, kept_usage + slid_usage, strict=True):
        expected = cost(u, price)
        assert float(raw.headers["x-tollway-cost-usd"]) == pytest.approx(expected, abs=1e-6)
        row = rows[raw.headers["x-request-id"]]
        assert row["cached_tokens"] == u.cached_tokens
        assert row["input_tokens"] == u.prompt_tokens
        assert row["cost_usd"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    full_price = sum(cost(Usage(u.prompt_tokens, u.completion_tokens), price)
                     for u in kept_usage)
    assert sum(cost(u, price) for u in kept_usage) < 0.8 * full_price
