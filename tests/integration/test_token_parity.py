"""The simulator bills prompts with count_request: through the gateway, every reply's
prompt_tokens equals what we count locally for the same request, tools included."""

from __future__ import annotations

import asyncio
import gc
import random
from typing import Any

import openai
import orjson
from corpora.token_corpus import random_text

from tests.helpers.gateway import GatewayHandle
from tests.helpers.sim import SimHandle
from tollway.accounting.tokens import count_request
from tollway.simulate.anthropic_wire import AnthropicDialect
from tollway.types import ChatRequest, FunctionCall, Message, ToolCall
from tollway.wire.openai import parse_chat_request

CONVERSATIONS = 500
NAMES = ["alice", "bob_2", "Agent-7", "x", "data_bot"]

TOOL_POOL: list[dict[str, Any]] = [
    {"name": "get_weather", "description": "Météo actuelle — current weather ☀️",
     "parameters": {"type": "object", "required": ["city"], "properties": {
         "city": {"type": "string", "description": "City, e.g. 東京"},
         "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}},
    {"name": "search", "description": "Search the index",
     "parameters": {"type": "object", "properties": {
         "query": {"type": "string"}, "limit": {"type": "integer", "enum": [5, 10, 50]},
         "filters": {"type": "object", "description": "Optional filters", "properties": {
             "lang": {"anyOf": [{"type": "string"}, {"type": "null"}]},
             "tags": {"type": "array", "items": {"type": "string"}}}}}}},
    {"name": "now", "description": "The time"},
    {"name": "create_order", "parameters": {"type": "object", "required": ["items"],
                                            "properties": {"items": {"type": "array", "items": {
                                                "type": "object", "properties": {
                                                    "sku": {"type": "string"},
                                                    "qty": {"type": "number"}}}},
                                                "express": {"type": "boolean"},
                                                "note": {"description": "untyped"}}}},
]


def content(rng: random.Random) -> str | list[dict[str, str]]:
    if rng.random() < 0.3:
        return [{"type": "text", "text": random_text(rng, 1)} for _ in range(rng.randint(1, 3))]
    return random_text(rng)


def named(rng: random.Random, message: dict[str, Any]) -> dict[str, Any]:
    if rng.random() < 0.25:
        message["name"] = rng.choice(NAMES)
    return message


def tool_turn(rng: random.Random, tools: list[dict[str, Any]], turn: int,
              legacy: bool) -> list[dict[str, Any]]:
    """An assistant calling functions, then their results."""
    fn = rng.choice(tools)
    if legacy:
        call = {"name": fn["name"], "arguments": orjson.dumps({"q": random_text(rng, 1)}).decode()}
        return [{"role": "assistant", "content": None, "function_call": call},
                {"role": "function", "name": fn["name"], "content": random_text(rng, 1)}]
    calls = [{"id": f"call_{turn}_{k}_{rng.randrange(10**9)}", "type": "function",
              "function": {"name": rng.choice(tools)["name"],
                           "arguments": orjson.dumps({"arg": random_text(rng, 1),
                                                      "n": rng.randint(0, 999)}).decode()}}
             for k in range(rng.randint(1, 3))]
    said = random_text(rng, 1) if rng.random() < 0.3 else None
    results = [{"role": "tool", "tool_call_id": c["id"], "content": content(rng)} for c in calls]
    return [{"role": "assistant", "content": said, "tool_calls": calls}, *results]


def conversation(rng: random.Random) -> dict[str, Any]:
    """A request body (without model): random roles, names, calls, results, unicode."""
    legacy = rng.random() < 0.15
    tools = rng.sample(TOOL_POOL, rng.randint(1, len(TOOL_POOL)))
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.7:
        role = rng.choice(["system", "system", "developer"])
        messages.append(named(rng, {"role": role, "content": content(rng)}))
    for turn in range(rng.randint(1, 4)):
        messages.append(named(rng, {"role": "user", "content": content(rng)}))
        if rng.random() < 0.6:
            messages += tool_turn(rng, tools, turn, legacy)
        elif rng.random() < 0.5:
            messages.append(named(rng, {"role": "assistant", "content": content(rng)}))
            messages.append({"role": "user", "content": content(rng)})
    body: dict[str, Any] = {"messages": messages}
    if legacy:
        body["functions"] = tools
        body["function_call"] = rng.choice(["auto", "none", {"name": tools[0]["name"]}])
    else:
        body["tools"] = [{"type": "function", "function": t} for t in tools]
        choice = rng.choice([None, "auto", "none", "required",
                             {"type": "function", "function": {"name": tools[0]["name"]}}])
        if choice is not None:
            body["tool_choice"] = choice
    return body


def expected_prompt_tokens(body: dict[str, Any]) -> int:
    req = parse_chat_request(orjson.dumps({"model": "sim", **body}))
    return count_request(req, "sim-model")  # the deployment's model, as the simulator sees it


async def send(c: openai.AsyncOpenAI, body: dict[str, Any], stream: bool) -> int:
    known = {k: body[k] for k in ("messages", "tools", "tool_choice") if k in body}
    extra = {k: body[k] for k in ("functions", "function_call") if k in body}
    max_tokens = 4
    if not stream:
        r = await c.chat.completions.create(model="sim", max_tokens=max_tokens,
                                            extra_body=extra, **known)
        assert r.usage is not None
        return r.usage.prompt_tokens
    chunks = await c.chat.completions.create(model="sim", max_tokens=max_tokens, stream=True,
                                             stream_options={"include_usage": True},
                                             extra_body=extra, **known)
    usage = [chunk.usage async for chunk in chunks if chunk.usage is not None]
    assert len(usage) == 1
    return usage[0].prompt_tokens


async def flush_leaked_clients() -> None:
    """Collect SDK clients that earlier tests left open, and let the close they schedule
    when collected run now. Run later, it aborts transports whose sockets the collector
    already closed, and removes the event loop's reader for whatever new socket has
    reused that file descriptor: one of ours, whose reply then never arrives."""
    gc.collect()
    await asyncio.sleep(0)
    closing = [t for t in asyncio.all_tasks()
               if getattr(t.get_coro(), "__qualname__", "").endswith("aclose")]
    if closing:
        await asyncio.wait(closing, timeout=10)


async def test_prompt_tokens_equal_local_count_for_500_tool_conversations(
        gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    rng = random.Random(20261122)
    bodies = [conversation(rng) for _ in range(CONVERSATIONS)]
    assert sum("functions" in b for b in bodies) > 30
    assert sum(any(m["role"] == "tool" for m in b["messages"]) for b in bodies) > 200
    await flush_leaked_clients()
    sem = asyncio.Semaphore(32)
    async with openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0,
                                  timeout=30) as c:

        async def one(i: int, body: dict[str, Any]) -> tuple[int, int, int]:
            async with sem:
                got = await send(c, body, stream=i % 4 == 0)
            return i, got, expected_prompt_tokens(body)

        results = await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    mismatched = [(i, got, want) for i, got, want in results if got != want]
    assert mismatched == []


def test_anthropic_dialect_counts_tools_like_count_request() -> None:
    tool = {"name": "get_weather", "description": "Weather now",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    body = {"model": "claude-sim", "max_tokens": 10, "system": "Be terse.",
            "tools": [tool], "tool_choice": {"type": "tool", "name": "get_weather"},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                                   "name": "get_weather",
                                                   "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                              "content": "sunny"}]}]}
    as_openai = ChatRequest(
        model="claude-sim",
        messages=[Message(role="system", content="Be terse."),
                  Message(role="user", content="Weather in Paris?"),
                  Message(role="assistant", content="", tool_calls=[
                      ToolCall("toolu_1", FunctionCall("get_weather", '{"city":"Paris"}'))]),
                  Message(role="user", content="sunny")],
        tools=[{"type": "function", "function": {
            "name": "get_weather", "description": "Weather now",
            "parameters": tool["input_schema"]}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    counted = AnthropicDialect().parse(body).prompt_tokens
    assert counted == count_request(as_openai, "claude-sim")
    without_tools = {k: v for k, v in body.items() if k not in ("tools", "tool_choice")}
    assert AnthropicDialect().parse(without_tools).prompt_tokens < counted
