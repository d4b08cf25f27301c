"""The OpenAI SDK through the gateway to the simulator: text, usage, headers, caps."""

from __future__ import annotations

import asyncio
import random

import openai
import pytest

from tests.conftest import DEFAULT_MAX_TOKENS, MAX_TOKENS_CAP
from tests.helpers.clients import track
from tests.helpers.gateway import GatewayHandle
from tests.helpers.sim import SimHandle
from tollway.accounting.tokens import count_messages
from tollway.simulate.text import reply_text
from tollway.types import Message

SIM_OUTPUT_TOKENS = 16


def client(gw: GatewayHandle) -> openai.AsyncOpenAI:
    # max_retries=0: Tollway owns retries; an SDK retry would hide a gateway failure.
    return track(openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0,
                                    timeout=30))


def expected_usage(messages: list[dict[str, str]], completion: int) -> tuple[int, int]:
    prompt = count_messages([Message(role=m["role"], content=m["content"])  # type: ignore[arg-type]
                             for m in messages], "sim-model")
    return prompt, completion


async def test_thousand_mixed_requests_return_exact_text_and_usage(
        gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    rng = random.Random(7)
    c = client(gw)
    sem = asyncio.Semaphore(32)
    checked = {"json": 0, "stream": 0, "stream_usage": 0}

    async def one(i: int) -> None:
        prompt = f"question {i}: {rng.choice(['why', 'how', 'when'])} {rng.random():.6f}"
        messages = [{"role": "system", "content": "be brief"},
                    {"role": "user", "content": prompt}]
        max_tokens = rng.randint(1, 30)
        n = min(SIM_OUTPUT_TOKENS, max_tokens)
        text = reply_text(prompt, n)
        want_prompt, want_completion = expected_usage(messages, n)
        mode = rng.choice(["json", "stream", "stream_usage"])
        async with sem:
            if mode == "json":
                r = await c.chat.completions.create(model="sim", messages=messages,  # type: ignore[arg-type]
                                                    max_tokens=max_tokens)
                assert r.choices[0].message.content == text
                assert r.usage is not None
                assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (
                    want_prompt, want_completion)
            else:
                include = mode == "stream_usage"
                kwargs = {"stream_options": {"include_usage": True}} if include else {}
                stream = await c.chat.completions.create(
                    model="sim", messages=messages, max_tokens=max_tokens,  # type: ignore[arg-type]
                    stream=True, **kwargs)
                parts, usage = [], None
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for ch in chunk.choices:
                        parts.append(ch.delta.content or "")
                assert "".join(parts) == text
                if include:
                    assert usage is not None
                    assert (usage.prompt_tokens, usage.completion_tokens) == (
                        want_prompt, want_completion)
                else:
                    assert usage is None, "usage chunk leaked to a client that did not ask"
        checked[mode] += 1

    await asyncio.gather(*(one(i) for i in range(1000)))
    assert sum(checked.values()) == 1000
    assert min(checked.values()) > 250
    assert fresh_sim.stats()["requests"] == 1000


async def test_reply_headers_name_request_and_model(gw: GatewayHandle,
                                                     fresh_sim: SimHandle) -> None:
    c = client(gw)
    raw = await c.chat.completions.with_raw_response.create(
        model="sim-alias", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-request-id": "my-trace-123"})
    assert raw.headers["x-request-id"] == "my-trace-123"
    assert raw.headers["x-tollway-model"] == "sim-model"
    assert raw.headers["x-tollway-provider"] == "openai"
    raw = await c.chat.completions.with_raw_response.create(
        model="sim", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-request-id"].startswith("req_")


async def test_default_output_cap_applies_and_large_requests_are_clamped(
        gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(gw)
    raw = await c.chat.completions.with_raw_response.create(
        model="sim", messages=[{"role": "user", "content": "a"}])
    assert "x-tollway-max-tokens-clamped" not in raw.headers
    raw = await c.chat.completions.with_raw_response.create(
        model="sim", messages=[{"role": "user", "content": "b"}], max_tokens=5000)
    assert raw.headers["x-tollway-max-tokens-clamped"] == "cap"
    raw = await c.chat.completions.with_raw_response.create(
        model="sim", messages=[{"role": "user", "content": "c"}], max_completion_tokens=7000)
    assert raw.headers["x-tollway-max-tokens-clamped"] == "cap"
    sent = [r["body"] for r in fresh_sim.stats()["recent_requests"]]
    assert sent[0]["max_tokens"] == DEFAULT_MAX_TOKENS
    assert sent[1]["max_tokens"] == MAX_TOKENS_CAP
    assert sent[2]["max_completion_tokens"] == MAX_TOKENS_CAP and "max_tokens" not in sent[2]


async def test_openai_parameters_pass_through(gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(gw)
    r = await c.chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "pick"}], n=3, seed=42,
        stop=["zzz"], user="u-1", temperature=0.3, response_format={"type": "json_object"},
        extra_body={"reasoning_effort": "low"})
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    body = fresh_sim.stats()["recent_requests"][-1]["body"]
    assert (body["n"], body["seed"], body["stop"], body["user"]) == (3, 42, ["zzz"], "u-1")
    assert body["response_format"] == {"type": "json_object"}
    assert body["reasoning_effort"] == "low"
    assert body["model"] == "sim-model"


async def test_tool_calls_json_and_streamed(gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(gw)
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
    r = await c.chat.completions.create(model="sim", tools=tools,  # type: ignore[arg-type]
                                        messages=[{"role": "user", "content": "weather?"}])
    call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    stream = await c.chat.completions.create(
        model="sim", tools=tools, stream=True,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "weather?"}])
    names, finish = [], None
    async for chunk in stream:
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or ():
                if tc.function and tc.function.name:
                    names.append(tc.function.name)
            finish = ch.finish_reason or finish
    assert names == ["get_weather"] and finish == "tool_calls"


async def test_models_lists_aliases(gw: GatewayHandle) -> None:
    ids = [m.id async for m in client(gw).models.list()]
    assert {"sim", "sim-alias", "sim-claude", "sim-fallback"} <= set(ids)


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_rate_limit_is_passed_on_with_retry_after(
        gw: GatewayHandle, fresh_sim: SimHandle, stream: bool) -> None:
    # Longer than routing.retry.max_retry_after (10 s): not waited out, passed on.
    fresh_sim.config(next_faults=["429"], retry_after=30)
    with pytest.raises(openai.RateLimitError) as e:
        await client(gw).chat.completions.create(
            model="sim", messages=[{"role": "user", "content": "x"}], stream=stream)
    assert e.value.response.headers["retry-after"] == "30"
    assert "rate limiting" in e.value.message


async def test_upstream_server_error_becomes_502(gw: GatewayHandle,
                                                 fresh_sim: SimHandle) -> None:
    fresh_sim.config(next_faults=["500"] * 3)  # every attempt (routing.retry.max_attempts)
    with pytest.raises(openai.APIStatusError) as e:
        await client(gw).chat.completions.create(
            model="sim", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502
    assert "sim-model failed with 500" in e.value.message


async def test_stream_dropped_midway_reports_error_in_band(gw: GatewayHandle,
                                                           fresh_sim: SimHandle) -> None:
    fresh_sim.config(next_faults=["drop_stream"], output_tokens=40)
    stream = await client(gw).chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.APIError) as e:
        async for _ in stream:
            pass
    assert "dropped the connection" in str(e.value)


async def test_next_deployment_answers_when_first_is_unreachable(
        gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    raw = await client(gw).chat.completions.with_raw_response.create(
        model="sim-fallback", messages=[{"role": "user", "content": "fallback please"}])
    assert raw.headers["x-tollway-model"] == "sim-model"
    assert raw.parse().choices[0].message.content == reply_text("fallback please", 16)


async def test_first_token_timeout_answers_504(gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    for stream in (False, True):
        fresh_sim.config(next_faults=["hang"] * 3)
        with pytest.raises(openai.APIStatusError) as e:
            r = await client(gw).chat.completions.create(
                model="sim-fast-timeout", messages=[{"role": "user", "content": "x"}],
                stream=stream)
            if stream:
                async for _ in r:  # type: ignore[union-attr]
                    pass
        assert e.value.status_code == 504
        assert "within" in e.value.message


async def test_client_timeout_cancels_nonstreaming_upstream(gw: GatewayHandle,
                                                            fresh_sim: SimHandle) -> None:
    fresh_sim.config(ttft_ms=10_000)
    c = openai.AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        await c.chat.completions.create(model="sim", messages=[{"role": "user", "content": "x"}])
    stats = fresh_sim.wait_for(lambda s: s["requests_cancelled"] >= 1, timeout=2)
    assert stats["requests_cancelled"] == 1
