"""Pre-flight cost checks, the mid-stream ceiling, tiers and cost headers, through a
real gateway in front of the simulator (model names are priced from the bundled table)."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import openai
import orjson
import pytest

from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle
from tollway.accounting.prices import load_table
from tollway.accounting.tokens import count_request
from tollway.wire.openai import parse_chat_request

CEILING = 0.001  # USD
MIN_OUTPUT = 20


def sim_dep(sim: SimHandle, model: str, **kw: object) -> dict[str, object]:
    return {"provider": "openai", "model": model, "api_base": f"{sim.url}/v1",
            "api_key": "k", **kw}


@pytest.fixture(scope="module")
def gw3(sim: SimHandle) -> Iterator[GatewayHandle]:
    config = {
        "models": {
            "ceiling": {"deployments": [sim_dep(sim, "gpt-4o")], "max_cost_usd": CEILING,
                        "min_output_tokens": MIN_OUTPUT},
            "short-inputs": {"deployments": [sim_dep(sim, "gpt-4o-mini")],
                             "max_input_tokens": 50},
            "mystery-limited": {"deployments": [sim_dep(sim, "mystery-model")],
                                "max_cost_usd": 1.0},
            "mystery": {"deployments": [sim_dep(sim, "mystery-model")]},
            "own-price": {"deployments": [sim_dep(sim, "my-model",
                                                  price={"input": 1.0, "output": 2.0})]},
            "small": {"deployments": [sim_dep(sim, "gpt-4.1-nano")]},
            "medium": {"deployments": [sim_dep(sim, "gpt-4.1-mini")]},
            "large": {"deployments": [sim_dep(sim, "gpt-4.1")]},
        },
        "tiers": {"simple": {"model": "small", "max_tokens": 64},
                  "standard": {"model": "medium"},
                  "complex": {"model": "large", "max_tokens": 4000}},
        "auto_downgrade": {"enabled": True, "max_input_tokens": 50, "to": "simple"},
    }
    handle = start_gateway(config)
    try:
        yield handle
    finally:
        handle.stop()


def client(gw: GatewayHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=30)


def usd(x: str) -> float:
    return float(x)


PRICES = load_table()


async def test_worst_case_over_ceiling_is_clamped_to_fit(gw3: GatewayHandle,
                                                         fresh_sim: SimHandle) -> None:
    messages = [{"role": "user", "content": "a short question"}]
    raw = await client(gw3).chat.completions.with_raw_response.create(
        model="ceiling", messages=messages, max_tokens=1000)  # type: ignore[arg-type]
    assert raw.headers["x-tollway-max-tokens-clamped"] == "cost_ceiling"
    sent = fresh_sim.stats()["recent_requests"][-1]["body"]["max_tokens"]
    price = PRICES.get("gpt-4o")
    assert price is not None
    n_in = int(raw.headers["x-tollway-input-tokens-estimated"])
    assert (n_in * price.input + sent * price.output) / 1e6 <= CEILING
    assert (n_in * price.input + (sent + 1) * price.output) / 1e6 > CEILING
    assert usd(raw.headers["x-tollway-max-cost-usd"]) <= CEILING
    assert raw.parse().choices[0].message.content


async def test_request_that_cannot_fit_never_reaches_upstream(gw3: GatewayHandle,
                                                              fresh_sim: SimHandle) -> None:
    long = "word " * 600  # ~600 tokens of input alone is most of the ceiling
    with pytest.raises(openai.BadRequestError) as e:
        await client(gw3).chat.completions.create(
            model="ceiling", messages=[{"role": "user", "content": long}], max_tokens=500)
    assert "exceeds the per-request ceiling $0.001" in e.value.message
    assert e.value.code == "cost_ceiling_exceeded"
    assert fresh_sim.stats()["requests"] == 0


async def test_input_over_token_limit_is_refused_with_count(gw3: GatewayHandle,
                                                            fresh_sim: SimHandle) -> None:
    messages = [{"role": "user", "content": "tell me " * 40}]
    want = count_request(parse_chat_request(orjson.dumps(
        {"model": "short-inputs", "messages": messages})), "gpt-4o-mini")
    with pytest.raises(openai.BadRequestError) as e:
        await client(gw3).chat.completions.create(model="short-inputs",
                                                  messages=messages)  # type: ignore[arg-type]
    assert e.value.message.endswith(f"Message too long: {want} tokens (limit: 50).")
    assert fresh_sim.stats()["requests"] == 0


async def test_stream_hitting_the_ceiling_is_cut_and_billed_for_what_was_sent(
        gw3: GatewayHandle, fresh_sim: SimHandle) -> None:
    # The upstream overruns max_tokens (as hidden reasoning or a provider bug would).
    fresh_sim.config(ignore_max_tokens=True, output_tokens=400, token_ms=2)
    body = {"model": "ceiling", "stream": True, "max_tokens": 1000,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "go on and on"}]}
    async with aiohttp.ClientSession() as s, s.post(f"{gw3.base_url}/chat/completions",
                                                    json=body) as r:
        raw = await r.read()
    events = [line for line in raw.split(b"\n\n") if line]
    chunks = [orjson.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    assert events[-1] == b"data: [DONE]"
    assert any(e.startswith(b": tollway: stream cut at the per-request cost ceiling")
               for e in events)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length"
    usage = chunks[-1]["usage"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"])
    from tollway.accounting.tokens import count_text

    assert usage["completion_tokens"] == count_text(text, "gpt-4o")
    price = PRICES.get("gpt-4o")
    assert price is not None
    billed = (usage["prompt_tokens"] * price.input + usage["completion_tokens"] * price.output)
    trailer = next(e for e in events if e.startswith(b": tollway cost_usd="))
    assert abs(usd(trailer.split(b"=")[1].split()[0].decode()) - billed / 1e6) < 1e-9
    assert billed / 1e6 <= CEILING
    stats = fresh_sim.wait_for(lambda st: st["streams_cancelled"] >= 1, timeout=2)
    assert stats["tokens_generated"] < 400


async def test_unpriced_model_refused_only_under_a_dollar_limit(gw3: GatewayHandle,
                                                                fresh_sim: SimHandle) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        await client(gw3).chat.completions.create(
            model="mystery-limited", messages=[{"role": "user", "content": "x"}])
    assert "has no price" in e.value.message and "prices:" in e.value.message
    raw = await client(gw3).chat.completions.with_raw_response.create(
        model="mystery", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-tollway-cost-usd"] == "unpriced"


async def test_deployment_price_from_config(gw3: GatewayHandle, fresh_sim: SimHandle) -> None:
    raw = await client(gw3).chat.completions.with_raw_response.create(
        model="own-price", messages=[{"role": "user", "content": "x"}])
    u = raw.parse().usage
    assert u is not None
    want = (u.prompt_tokens * 1.0 + u.completion_tokens * 2.0) / 1e6
    assert abs(usd(raw.headers["x-tollway-cost-usd"]) - want) < 1e-12


async def test_tiers_by_model_name_and_header(gw3: GatewayHandle, fresh_sim: SimHandle) -> None:
    long = "please think about this carefully " * 10  # > 50 tokens: no downgrade
    raw = await client(gw3).chat.completions.with_raw_response.create(
        model="tier:complex", messages=[{"role": "user", "content": long}])
    assert (raw.headers["x-tollway-tier"], raw.headers["x-tollway-model"]) == (
        "complex", "gpt-4.1")
    raw = await client(gw3).chat.completions.with_raw_response.create(
        model="anything", messages=[{"role": "user", "content": long}],
        extra_headers={"x-tollway-tier": "standard"})
    assert raw.headers["x-tollway-model"] == "gpt-4.1-mini"
    with pytest.raises(openai.BadRequestError) as e:
        await client(gw3).chat.completions.create(
            model="tier:huge", messages=[{"role": "user", "content": "x"}])
    assert "Unknown tier 'huge'" in e.value.message


async def test_tier_output_cap_and_auto_downgrade(gw3: GatewayHandle,
                                                  fresh_sim: SimHandle) -> None:
    raw = await client(gw3).chat.completions.with_raw_response.create(
        model="tier:standard", messages=[{"role": "user", "content": "hi"}], max_tokens=500)
    assert raw.headers["x-tollway-downgraded-from"] == "standard"
    assert (raw.headers["x-tollway-tier"], raw.headers["x-tollway-model"]) == (
        "simple", "gpt-4.1-nano")
    assert raw.headers["x-tollway-max-tokens-clamped"] == "tier"
    assert fresh_sim.stats()["recent_requests"][-1]["body"]["max_tokens"] == 64
    raw = await client(gw3).chat.completions.with_raw_response.create(
        model="tier:complex", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-tollway-tier"] == "complex"  # never downgraded from complex
    assert "x-tollway-downgraded-from" not in raw.headers


PRICED = sorted(PRICES.models())


@pytest.fixture(scope="module")
def gw_priced(sim: SimHandle) -> Iterator[GatewayHandle]:
    """One alias per priced model, each answered by the simulator under that name."""
    models = {f"p-{i}": {"deployments": [sim_dep(sim, m)]} for i, m in enumerate(PRICED)}
    handle = start_gateway({"models": models})
    try:
        yield handle
    finally:
        handle.stop()


@pytest.mark.parametrize("model", PRICED)
async def test_cost_header_is_usage_times_price(gw_priced: GatewayHandle,
                                                fresh_sim: SimHandle, model: str) -> None:
    from tollway.accounting.prices import cost, format_usd
    from tollway.types import Usage

    price = PRICES.get(model)
    assert price is not None
    if price.dimensions is not None:  # an embedding model: input only
        got = await client(gw_priced).embeddings.with_raw_response.create(
            model=f"p-{PRICED.index(model)}", input=model)
        n = got.parse().usage.prompt_tokens
        assert n > 0 and got.headers["x-tollway-output-tokens"] == "0"
        assert got.headers["x-tollway-cost-usd"] == format_usd(
            cost(Usage(prompt_tokens=n, total_tokens=n), price))
        return
    raw = await client(gw_priced).chat.completions.with_raw_response.create(
        model=f"p-{PRICED.index(model)}", messages=[{"role": "user", "content": model}])
    u = raw.parse().usage
    assert u is not None and u.prompt_tokens > 0 and u.completion_tokens > 0
    want = cost(Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                      total_tokens=u.total_tokens), price)
    assert raw.headers["x-tollway-cost-usd"] == format_usd(want)
    assert want == pytest.approx((u.prompt_tokens * price.input
                                  + u.completion_tokens * price.output) / 1e6, rel=1e-12)
    assert raw.headers["x-tollway-input-tokens"] == str(u.prompt_tokens)
    assert raw.headers["x-tollway-output-tokens"] == str(u.completion_tokens)
