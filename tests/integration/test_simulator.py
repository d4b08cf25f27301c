"""`tollway simulate` against the official openai and anthropic SDKs.

One simulator subprocess serves the module; each test starts from zeroed stats and the
start-up config.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

import anthropic
import msgspec
import openai
import pytest

from tests.helpers import sim_fixtures
from tests.helpers.sim import SimHandle
from tollway.accounting.tokens import count_request, count_text
from tollway.config import PacingConfig
from tollway.errors import RateLimited, Unavailable
from tollway.providers.anthropic import AnthropicProvider
from tollway.providers.http import Transport
from tollway.providers.openai import OpenAIProvider
from tollway.routing.pacing import Pacer
from tollway.simulate.server import SIMULATOR, add_cli_args, config_from_args, start
from tollway.simulate.state import SimConfig
from tollway.simulate.text import reply_text
from tollway.types import ChatRequest, Deployment

# The module's own simulator and SDK clients (pytest finds fixtures among the
# module's names).
sim_server, sim = sim_fixtures.sim_server, sim_fixtures.sim
oai, claude = sim_fixtures.oai, sim_fixtures.claude

USER = "Tell me about rivers."
SYSTEM = "You are terse."
MESSAGES: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": USER}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}},
                   "required": ["city"]}}}


def prompt_tokens(messages: list[dict[str, Any]], model: str = "gpt-4o-mini",
                  tools: list[dict[str, Any]] | None = None) -> int:
    """What the simulator reports: messages plus tool definitions, counted as OpenAI
    bills them."""
    req = msgspec.convert({"model": model, "messages": messages, "tools": tools},
                          ChatRequest)
    return count_request(req, model)


def raw_post(sim: SimHandle, path: str, data: bytes,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(sim.url + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# -- OpenAI ------------------------------------------------------------------------------


async def test_openai_json_reply_and_true_usage(sim: SimHandle, oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert r.id.startswith("chatcmpl-")
    assert r.model == "gpt-4o-mini"
    assert r.system_fingerprint
    assert r.choices[0].message.content == reply_text(USER, 16)
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens == prompt_tokens(MESSAGES)
    assert r.usage.completion_tokens == 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + 16
    assert sim.stats()["tokens_generated"] == 16


async def test_openai_max_tokens_caps_with_length(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                          max_tokens=5)
    assert r.choices[0].message.content == reply_text(USER, 5)
    assert r.choices[0].finish_reason == "length"
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                          max_completion_tokens=7)
    assert r.usage is not None and r.usage.completion_tokens == 7


async def test_openai_stream_text_and_include_usage(sim: SimHandle,
                                                    oai: openai.AsyncOpenAI) -> None:
    sim.config(output_tokens=24)
    stream = await oai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True})
    text, finish, usage, n_content = "", None, None, 0
    async for chunk in stream:
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
            continue
        delta = chunk.choices[0].delta
        if delta.content:
            text += delta.content
            n_content += 1
        finish = chunk.choices[0].finish_reason or finish
    assert text == reply_text(USER, 24)
    assert n_content == 24  # one token per chunk
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 24
    assert usage.prompt_tokens == prompt_tokens(MESSAGES)
    stats = sim.stats()
    assert (stats["streams_started"], stats["streams_completed"]) == (1, 1)
    assert stats["tokens_generated"] == 24


async def test_openai_n_choices(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3,
                                          max_tokens=10)
    texts = [c.message.content for c in r.choices]
    assert texts == [reply_text(USER, 10, i) for i in range(3)]
    assert len(set(texts)) == 3
    assert r.usage is not None and r.usage.completion_tokens == 30

    stream = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=2,
                                               max_tokens=10, stream=True)
    got = ["", ""]
    async for chunk in stream:
        for c in chunk.choices:
            got[c.index] += c.delta.content or ""
    assert got == [reply_text(USER, 10, 0), reply_text(USER, 10, 1)]


async def test_openai_tool_call(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                          tools=[WEATHER_TOOL])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert set(args) == {"city"} and isinstance(args["city"], str)
    assert r.usage is not None
    assert r.usage.completion_tokens == (count_text("get_weather")
                                         + count_text(call.function.arguments))

    # Same prompt, same call: ids and arguments are deterministic.
    again = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                              tools=[WEATHER_TOOL])
    assert again.choices[0].message.tool_calls == calls


async def test_openai_streamed_tool_call(oai: openai.AsyncOpenAI) -> None:
    full = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                             tools=[WEATHER_TOOL])
    expected = full.choices[0].message.tool_calls[0]
    stream = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                               tools=[WEATHER_TOOL], stream=True)
    call_id, name, args, finish, arg_chunks = None, "", "", None, 0
    async for chunk in stream:
        c = chunk.choices[0]
        for tc in c.delta.tool_calls or []:
            assert tc.index == 0
            call_id = tc.id or call_id
            if tc.function and tc.function.name:
                name += tc.function.name
            if tc.function and tc.function.arguments:
                args += tc.function.arguments
                arg_chunks += 1
        finish = c.finish_reason or finish
    assert (call_id, name, args) == (expected.id, "get_weather",
                                     expected.function.arguments)
    assert arg_chunks > 1
    assert finish == "tool_calls"


async def test_openai_no_tool_call_after_tool_result_or_choice_none(
        oai: openai.AsyncOpenAI) -> None:
    after_tool = [*MESSAGES,
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "call_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=after_tool,
                                          tools=[WEATHER_TOOL])
    assert r.choices[0].message.content == reply_text(USER, 16)
    assert r.usage is not None and r.usage.prompt_tokens == prompt_tokens(
        after_tool, tools=[WEATHER_TOOL])
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                          tools=[WEATHER_TOOL], tool_choice="none")
    assert r.choices[0].finish_reason == "stop"


async def test_openai_json_mode(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                          response_format={"type": "json_object"})
    content = r.choices[0].message.content
    assert content is not None and isinstance(json.loads(content), dict)
    assert r.usage is not None and r.usage.completion_tokens == count_text(content)

    schema = {"type": "object", "required": ["title", "score"],
              "properties": {"title": {"type": "string"}, "score": {"type": "integer"}}}
    r = await oai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    obj = json.loads(r.choices[0].message.content or "")
    assert set(obj) == {"title", "score"} and isinstance(obj["score"], int)


async def test_openai_stop_sequence(oai: openai.AsyncOpenAI) -> None:
    full = reply_text(USER, 16)
    word = full.split(" ")[3]
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                          stop=[" " + word])
    cut = full[: full.index(" " + word)]
    assert r.choices[0].message.content == cut
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens == count_text(cut)


async def test_openai_models(oai: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in oai.models.list()]
    assert "sim-small" in models


# -- Anthropic ---------------------------------------------------------------------------


def anthropic_input_tokens(system: str, user: str, model: str) -> int:
    return prompt_tokens([{"role": "system", "content": system},
                          {"role": "user", "content": user}], model)


async def test_anthropic_json_reply(claude: anthropic.AsyncAnthropic) -> None:
    r = await claude.messages.create(model="claude-haiku-4-5", max_tokens=100, system=SYSTEM,
                                     messages=[{"role": "user", "content": USER}])
    assert r.id.startswith("msg_")
    assert r.model == "claude-haiku-4-5"
    assert r.content[0].type == "text"
    assert r.content[0].text == reply_text(USER, 16)
    assert r.stop_reason == "end_turn"
    assert r.usage.input_tokens == anthropic_input_tokens(SYSTEM, USER, "claude-haiku-4-5")
    assert r.usage.output_tokens == 16

    r = await claude.messages.create(model="claude-haiku-4-5", max_tokens=4,
                                     messages=[{"role": "user", "content": USER}])
    assert r.stop_reason == "max_tokens"
    assert r.content[0].text == reply_text(USER, 4)


async def test_anthropic_stream(sim: SimHandle, claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(model="claude-haiku-4-5", max_tokens=100, system=SYSTEM,
                                      messages=[{"role": "user", "content": USER}]) as s:
        text = "".join([t async for t in s.text_stream])
        final = await s.get_final_message()
    assert text == reply_text(USER, 16)
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 16
    assert final.usage.input_tokens == anthropic_input_tokens(SYSTEM, USER,
                                                              "claude-haiku-4-5")
    assert sim.stats()["streams_completed"] == 1


async def test_anthropic_stop_sequence(claude: anthropic.AsyncAnthropic) -> None:
    full = reply_text(USER, 16)
    word = " " + full.split(" ")[2]
    r = await claude.messages.create(model="claude-haiku-4-5", max_tokens=100,
                                     stop_sequences=[word],
                                     messages=[{"role": "user", "content": USER}])
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == word
    assert r.content[0].text == full[: full.index(word)]


async def test_anthropic_tool_use(claude: anthropic.AsyncAnthropic) -> None:
    tools = [{"name": "get_weather", "description": "Weather",
              "input_schema": WEATHER_TOOL["function"]["parameters"]}]
    msgs = [{"role": "user", "content": USER}]
    r = await claude.messages.create(model="claude-haiku-4-5", max_tokens=100,
                                     tools=tools, messages=msgs)
    assert r.stop_reason == "tool_use"
    block = r.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.id.startswith("toolu_") and set(block.input) == {"city"}

    async with claude.messages.stream(model="claude-haiku-4-5", max_tokens=100, tools=tools,
                                      messages=msgs) as s:
        final = await s.get_final_message()
    assert final.content[0].input == block.input

    # Answering the tool result gets text back.
    msgs += [{"role": "assistant", "content": [block.model_dump()]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id,
                                           "content": "sunny"}]}]
    r = await claude.messages.create(model="claude-haiku-4-5", max_tokens=100, tools=tools,
                                     messages=msgs)
    assert r.stop_reason == "end_turn"


# -- faults ------------------------------------------------------------------------------


async def test_429_carries_retry_after(sim: SimHandle, oai: openai.AsyncOpenAI,
                                       claude: anthropic.AsyncAnthropic) -> None:
    sim.config(retry_after=2, next_faults=["429", "429"])
    with pytest.raises(openai.RateLimitError) as e:
        await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert e.value.response.headers["retry-after"] == "2"
    assert e.value.response.headers["retry-after-ms"] == "2000"
    assert e.value.code == "rate_limit_exceeded"
    with pytest.raises(anthropic.RateLimitError) as ae:
        await claude.messages.create(model="claude-haiku-4-5", max_tokens=10,
                                     messages=[{"role": "user", "content": USER}])
    assert ae.value.response.headers["retry-after"] == "2"
    assert ae.value.body["error"]["type"] == "rate_limit_error"
    assert sim.stats()["faults_injected"]["429"] == 2


async def test_500_and_503(sim: SimHandle, oai: openai.AsyncOpenAI,
                           claude: anthropic.AsyncAnthropic) -> None:
    sim.config(next_faults=["500", "503", "503"])
    with pytest.raises(openai.InternalServerError) as e:
        await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert e.value.status_code == 500 and e.value.type == "server_error"
    with pytest.raises(openai.InternalServerError) as e:
        await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert e.value.status_code == 503
    with pytest.raises(anthropic.InternalServerError) as ae:
        await claude.messages.create(model="claude-haiku-4-5", max_tokens=10,
                                     messages=[{"role": "user", "content": USER}])
    assert ae.value.status_code == 503
    assert ae.value.body["error"]["type"] == "overloaded_error"


async def test_next_faults_queue_in_order(sim: SimHandle, oai: openai.AsyncOpenAI) -> None:
    cfg = sim.config(next_faults=["500", "429"])
    assert cfg["next_faults"] == ["500", "429"]
    with pytest.raises(openai.InternalServerError):
        await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert sim.config()["next_faults"] == ["429"]
    with pytest.raises(openai.RateLimitError):
        await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert r.choices[0].message.content == reply_text(USER, 16)
    faults = sim.stats()["faults_injected"]
    assert (faults["500"], faults["429"]) == (1, 1)


async def test_fault_rates_are_seeded(sim: SimHandle) -> None:
    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()

    def outcomes() -> list[int]:
        return [raw_post(sim, "/v1/chat/completions", body)[0] for _ in range(30)]

    sim.config(rate_500=0.3, rate_503=0.2, seed=42)
    first = outcomes()
    sim.reset()
    assert outcomes() == first
    assert {200, 500, 503} == set(first)


async def test_drop_stream_breaks_the_sdk_stream(sim: SimHandle,
                                                 oai: openai.AsyncOpenAI) -> None:
    sim.config(output_tokens=20, drop_after_tokens=5, next_faults=["drop_stream"])
    stream = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                               stream=True)
    text = ""
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            text += chunk.choices[0].delta.content or ""
    assert text == reply_text(USER, 5)
    stats = sim.stats()
    assert stats["faults_injected"]["drop_stream"] == 1
    assert stats["tokens_generated"] == 5
    assert (stats["streams_started"], stats["streams_completed"]) == (1, 0)


async def test_reset_fault(sim: SimHandle, oai: openai.AsyncOpenAI,
                           claude: anthropic.AsyncAnthropic) -> None:
    sim.config(next_faults=["reset", "reset"])
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(anthropic.APIConnectionError):
        await claude.messages.create(model="claude-haiku-4-5", max_tokens=10,
                                     messages=[{"role": "user", "content": USER}])
    assert sim.stats()["faults_injected"]["reset"] == 2


async def test_hang_until_client_times_out(sim: SimHandle) -> None:
    sim.config(next_faults=["hang"])
    client = openai.AsyncOpenAI(base_url=sim.openai_base, api_key="x", max_retries=0,
                                timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    stats = sim.wait_for(lambda s: s["requests_cancelled"] == 1)
    assert stats["faults_injected"]["hang"] == 1
    assert stats["last_cancel_at"] is not None


async def test_client_closing_mid_stream_is_counted(sim: SimHandle,
                                                    oai: openai.AsyncOpenAI) -> None:
    sim.config(output_tokens=200, token_ms=10)
    stream = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                               stream=True)
    seen = 0
    async for chunk in stream:
        seen += bool(chunk.choices[0].delta.content)
        if seen == 3:
            break
    await stream.close()
    stats = sim.wait_for(lambda s: s["streams_cancelled"] == 1)
    assert stats["streams_completed"] == 0
    assert 3 <= stats["tokens_generated"] < 200
    assert stats["last_cancel_at"] is not None


async def test_latency_model(sim: SimHandle, oai: openai.AsyncOpenAI) -> None:
    sim.config(ttft_ms=150, token_ms=5, output_tokens=10)
    t0 = time.perf_counter()
    await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert time.perf_counter() - t0 >= 0.2  # 150 + 10 * 5 ms

    t0 = time.perf_counter()
    stream = await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                               stream=True)
    first = None
    async for chunk in stream:
        if first is None and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    assert first is not None and first >= 0.15
    assert total >= 0.195  # then 9 more tokens, 5 ms apart


# -- control, auth, validation -----------------------------------------------------------


def test_config_validation(sim: SimHandle) -> None:
    bad: list[dict[str, Any]] = [
        {"rate_429": 1.5}, {"ttft_ms": -1}, {"output_tokens": 0}, {"nope": 1},
        {"next_faults": ["418"]}, {"rate_500": 0.6, "rate_503": 0.6}, {"seed": "x"},
    ]
    for patch in bad:
        req = urllib.request.Request(sim.url + "/_sim/config", method="PUT",
                                     data=json.dumps(patch).encode())
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 400, patch
        assert "error" in json.loads(e.value.read())
    cfg = sim.config(ttft_ms=5, rate_hang=0.25)
    assert (cfg["ttft_ms"], cfg["rate_hang"], cfg["output_tokens"]) == (5, 0.25, 16)


async def test_require_key(sim: SimHandle) -> None:
    sim.config(require_key="secret")
    bad_o = openai.AsyncOpenAI(base_url=sim.openai_base, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad_o.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    bad_a = anthropic.AsyncAnthropic(base_url=sim.anthropic_base, api_key="wrong",
                                     max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        await bad_a.messages.create(model="claude-haiku-4-5", max_tokens=10,
                                    messages=[{"role": "user", "content": USER}])
    good_o = openai.AsyncOpenAI(base_url=sim.openai_base, api_key="secret", max_retries=0)
    await good_o.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    good_a = anthropic.AsyncAnthropic(base_url=sim.anthropic_base, api_key="secret",
                                      max_retries=0)
    await good_a.messages.create(model="claude-haiku-4-5", max_tokens=10,
                                 messages=[{"role": "user", "content": USER}])


def test_bad_requests_answer_400_in_each_format(sim: SimHandle) -> None:
    status, body = raw_post(sim, "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = raw_post(sim, "/v1/chat/completions", b'{"messages": []}')
    assert status == 400 and body["error"]["param"] == "model"
    status, body = raw_post(sim, "/v1/chat/completions", b'{"model": "m", "messages": []}')
    assert status == 400 and body["error"]["param"] == "messages"
    status, body = raw_post(sim, "/v1/messages",
                            b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}')
    assert status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


async def test_recent_requests_record_bodies_without_auth(sim: SimHandle,
                                                          oai: openai.AsyncOpenAI) -> None:
    await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                      max_tokens=3, extra_headers={"x-trace": "t1"})
    stats = sim.stats()
    assert stats["requests"] == 1
    assert stats["requests_by_endpoint"] == {"/v1/chat/completions": 1}
    [rec] = stats["recent_requests"]
    assert rec["endpoint"] == "/v1/chat/completions"
    assert rec["body"] == {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 3}
    assert rec["headers"]["x-trace"] == "t1"
    assert "authorization" not in rec["headers"]


async def test_in_process_start() -> None:
    runner, port = await start("127.0.0.1", 0, SimConfig(output_tokens=3))
    try:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x",
                                    max_retries=0)
        r = await client.chat.completions.create(model="m", messages=MESSAGES)
        assert r.choices[0].message.content == reply_text(USER, 3)
        assert runner.app[SIMULATOR].stats.tokens_generated == 3
    finally:
        await runner.cleanup()


# -- rate-limit emulation ------------------------------------------------------------------


def post_headers(sim: SimHandle, path: str, body: dict[str, Any],
                 ) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST JSON; the status, the lower-cased headers and the body."""
    req = urllib.request.Request(sim.url + path, data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES}
CLAUDE = {"model": "claude-haiku-4-5", "max_tokens": 10,
          "messages": [{"role": "user", "content": USER}]}


def seconds(duration: str) -> float:
    """An OpenAI reset ("20ms", "59.873s", "1m0s") in seconds."""
    if duration.endswith("ms"):
        return float(duration[:-2]) / 1000
    minutes, _, rest = duration.rpartition("m")
    return float(minutes or 0) * 60 + float(rest.rstrip("s"))


def test_rate_limit_headers_count_down_in_openai_format(sim: SimHandle) -> None:
    sim.config(rpm_limit=3, tpm_limit=10_000)
    cost = prompt_tokens(MESSAGES) + 16
    seen = []
    for _ in range(3):
        status, h, _ = post_headers(sim, "/v1/chat/completions", CHAT)
        assert status == 200
        seen.append((h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"],
                     h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]))
        # The first request leaves the window a minute after it came.
        assert 50 < seconds(h["x-ratelimit-reset-requests"]) <= 60
        assert 50 < seconds(h["x-ratelimit-reset-tokens"]) <= 60
    assert seen == [("3", str(r), "10000", str(10_000 - cost * (3 - r))) for r in (2, 1, 0)]


async def test_rate_limit_headers_on_streams(sim: SimHandle, oai: openai.AsyncOpenAI) -> None:
    sim.config(rpm_limit=5)
    raw = await oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert raw.headers["x-ratelimit-remaining-requests"] == "4"
    assert "x-ratelimit-limit-tokens" not in raw.headers  # only the limits that are set
    async for _ in raw.parse():
        pass


async def test_past_rpm_limit_429_says_when_it_fits(sim: SimHandle,
                                                    oai: openai.AsyncOpenAI) -> None:
    sim.config(rpm_limit=2)
    t0 = time.monotonic()
    for _ in range(2):
        assert post_headers(sim, "/v1/chat/completions", CHAT)[0] == 200
    with pytest.raises(openai.RateLimitError) as e:
        await oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    elapsed = time.monotonic() - t0
    h = e.value.response.headers
    wait = int(h["retry-after-ms"]) / 1000
    assert 60 - elapsed - 0.01 <= wait <= 60  # when the first request leaves the window
    assert h["retry-after"] == str(math.ceil(wait))
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert e.value.code == "rate_limit_exceeded"
    stats = sim.stats()
    assert stats["rate_limited"] == 1
    assert stats["faults_injected"]["429"] == 0  # not an injected fault
    # A refused request does not count: the window still holds two.
    status, h2, _ = post_headers(sim, "/v1/chat/completions", CHAT)
    assert status == 429 and h2["x-ratelimit-remaining-requests"] == "0"


def test_past_tpm_limit_429(sim: SimHandle) -> None:
    cost = prompt_tokens(MESSAGES) + 16
    sim.config(tpm_limit=cost * 2 + 1)
    assert post_headers(sim, "/v1/chat/completions", CHAT)[0] == 200
    status, h, _ = post_headers(sim, "/v1/chat/completions", CHAT)
    assert status == 200 and h["x-ratelimit-remaining-tokens"] == "1"
    status, h, body = post_headers(sim, "/v1/chat/completions", CHAT)
    assert status == 429 and body["error"]["type"] == "requests"
    assert 50 < int(h["retry-after-ms"]) / 1000 <= 60
    # Asking for 1 output token does not help: the prompt alone is more than is left.
    status, _, _ = post_headers(sim, "/v1/chat/completions", {**CHAT, "max_tokens": 1})
    assert status == 429
    assert sim.stats()["rate_limited"] == 2


async def test_anthropic_rate_limit_headers(sim: SimHandle,
                                            claude: anthropic.AsyncAnthropic) -> None:
    sim.config(rpm_limit=2, tpm_limit=50_000)
    status, h, _ = post_headers(sim, "/v1/messages", CLAUDE)
    assert status == 200
    assert h["anthropic-ratelimit-requests-limit"] == "2"
    assert h["anthropic-ratelimit-requests-remaining"] == "1"
    assert h["anthropic-ratelimit-tokens-limit"] == "50000"
    assert int(h["anthropic-ratelimit-tokens-remaining"]) < 50_000
    reset = datetime.fromisoformat(h["anthropic-ratelimit-requests-reset"])
    assert 50 <= reset.timestamp() - time.time() <= 61  # to the second, rounded up
    assert not any(k.startswith("x-ratelimit-") for k in h)
    assert post_headers(sim, "/v1/messages", CLAUDE)[0] == 200
    with pytest.raises(anthropic.RateLimitError) as e:
        await claude.messages.create(**CLAUDE)
    assert e.value.body["error"]["type"] == "rate_limit_error"
    assert e.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert 50 < int(e.value.response.headers["retry-after-ms"]) / 1000 <= 60


def test_requests_by_model(sim: SimHandle) -> None:
    for model in ("sim-a", "sim-b", "sim-a"):
        post_headers(sim, "/v1/chat/completions", {**CHAT, "model": model})
    post_headers(sim, "/v1/messages", {**CLAUDE, "model": "sim-c"})
    assert sim.stats()["requests_by_model"] == {"sim-a": 2, "sim-b": 1, "sim-c": 1}


def test_rate_limit_config_validation(sim: SimHandle) -> None:
    for patch in ({"rpm_limit": 0}, {"tpm_limit": -5}, {"rpm_limit": "x"}):
        req = urllib.request.Request(sim.url + "/_sim/config", method="PUT",
                                     data=json.dumps(patch).encode())
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 400, patch
    assert sim.config(rpm_limit=7)["rpm_limit"] == 7
    assert sim.config(rpm_limit=None)["rpm_limit"] is None


def test_cli_flags_set_the_limits() -> None:
    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    cfg = config_from_args(parser.parse_args(["--rpm-limit", "60", "--tpm-limit", "9000"]))
    assert (cfg.rpm_limit, cfg.tpm_limit) == (60, 9000)
    assert config_from_args(parser.parse_args([])).rpm_limit is None


async def test_the_window_slides_on_the_simulators_clock() -> None:
    now = [0.0]
    runner, port = await start("127.0.0.1", 0, SimConfig(output_tokens=3, rpm_limit=2),
                               clock=lambda: now[0])
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x",
                                max_retries=0)
    try:
        await client.chat.completions.create(model="m", messages=MESSAGES)
        now[0] = 10.0
        await client.chat.completions.create(model="m", messages=MESSAGES)
        now[0] = 15.0
        with pytest.raises(openai.RateLimitError) as e:
            await client.chat.completions.create(model="m", messages=MESSAGES)
        h = e.value.response.headers
        assert (h["retry-after-ms"], h["retry-after"]) == ("45000", "45")
        assert h["x-ratelimit-reset-requests"] == "45s"
        now[0] = 60.0  # the first request leaves the window
        raw = await client.chat.completions.with_raw_response.create(model="m",
                                                                     messages=MESSAGES)
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        assert raw.headers["x-ratelimit-reset-requests"] == "10s"
        now[0] = 130.0  # all gone
        raw = await client.chat.completions.with_raw_response.create(model="m",
                                                                     messages=MESSAGES)
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"
        assert raw.headers["x-ratelimit-reset-requests"] == "1m0s"
    finally:
        await client.close()
        await runner.cleanup()


# -- providers report the upstream's rate-limit headers ------------------------------------


def deployment(sim: SimHandle, provider: str) -> Deployment:
    if provider == "openai":
        return Deployment(provider="openai", model="gpt-4o-mini", api_base=sim.openai_base,
                          api_key="x")
    return Deployment(provider="anthropic", model="claude-haiku-4-5",
                      api_base=sim.anthropic_base, api_key="x")


async def stream_ratelimit(provider: OpenAIProvider | AnthropicProvider, req: ChatRequest,
                           dep: Deployment) -> dict[str, str]:
    """Read a whole stream; its rate-limit headers."""
    stream = await provider.stream(req, dep)
    async for _ in stream.frames:
        pass
    return stream.ratelimit


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_providers_report_ratelimit_headers(sim: SimHandle, kind: str) -> None:
    sim.config(rpm_limit=2, tpm_limit=100_000)
    transport = Transport()
    provider = (OpenAIProvider(transport) if kind == "openai"
                else AnthropicProvider(transport))
    prefix = "x-ratelimit-" if kind == "openai" else "anthropic-ratelimit-"
    requests_left = ("x-ratelimit-remaining-requests" if kind == "openai"
                     else "anthropic-ratelimit-requests-remaining")
    dep = deployment(sim, kind)
    req = msgspec.convert({"model": "alias", "messages": MESSAGES, "max_tokens": 10},
                          ChatRequest)
    try:
        reply = await provider.complete(req, dep)
        assert reply.ratelimit and all(k.startswith(prefix) for k in reply.ratelimit)
        assert len(reply.ratelimit) == 6  # limit, remaining, reset for requests and tokens
        assert reply.ratelimit[requests_left] == "1"
        streamed = await stream_ratelimit(provider, msgspec.structs.replace(req, stream=True),
                                          dep)
        assert all(k.startswith(prefix) for k in streamed)
        # The pacer reads them as they are: the provider said no request is left.
        pacer = Pacer(PacingConfig(max_wait_seconds=1))
        pacer.learn(streamed)
        state = pacer.snapshot()
        assert (state.rpm, state.tpm) == (2, 100_000)
        assert 50 < state.held_seconds <= 61
        with pytest.raises(Unavailable):
            await pacer.acquire(10)
        with pytest.raises(RateLimited) as e:  # the upstream's 429 carries them too
            await provider.complete(req, dep)
        assert e.value.upstream_headers[requests_left] == "0"
        assert all(k.startswith(prefix) for k in e.value.upstream_headers)
    finally:
        await transport.close()
