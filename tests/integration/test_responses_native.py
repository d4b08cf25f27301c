"""The Responses API spoken natively: a gateway whose deployment is the simulator's
`/v1/responses` (`responses: native`), with the official SDK — text and streams, a
function-tool round trip, a hosted tool and a reasoning item passed through and sent
back on continuation, usage and the ledger priced from the upstream's usage, an
aborted native stream billed; and `auto` translating for a compatible api_base."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import gateway_config
from tests.helpers.admin import create_key, ledger_rows
from tests.helpers.clients import abandon_stream, openai_client
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle

MASTER = "master-" + os.urandom(8).hex()
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False},
           "strict": True}


@pytest.fixture(scope="module")
def gwn(sim: SimHandle) -> Iterator[GatewayHandle]:
    cfg = gateway_config(sim.url)
    models: Any = cfg["models"]
    native = {**models["sim"]["deployments"][0], "responses": "native"}
    models["sim-native"] = {"deployments": [native]}
    models["sim-native-redact"] = {"deployments": [native], "guards": {"pii": "redact"}}
    cfg["prices"] = {"sim-model": {"input": 1.0, "output": 2.0}}
    handle = start_gateway(cfg, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


def client(gw: GatewayHandle, key: str = MASTER) -> openai.AsyncOpenAI:
    return openai_client(gw.base_url, key)


def sent(sim: SimHandle) -> list[dict[str, Any]]:
    """The bodies the simulator's /v1/responses received, oldest first."""
    return [r["body"] for r in sim.stats()["recent_requests"]
            if r["endpoint"] == "/v1/responses"]


def only_native(sim: SimHandle) -> None:
    assert "/v1/chat/completions" not in sim.stats()["requests_by_endpoint"]


async def test_json_and_stream_natively(gwn: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(gwn)
    r = await c.responses.create(model="sim-native", input="Say hello.",
                                 instructions="Be brief.", max_output_tokens=40)
    assert r.id.startswith("resp_") and r.status == "completed" and r.output_text
    assert r.usage is not None and r.usage.output_tokens == 16 and r.store is True
    body = sent(fresh_sim)[-1]
    assert body["model"] == "sim-model" and body["store"] is False
    assert body["instructions"] == "Be brief." and body["max_output_tokens"] == 40
    assert (await c.responses.retrieve(r.id)).output_text == r.output_text
    stream = await c.responses.create(model="sim-native", input="Stream a story.",
                                      stream=True)
    kinds: list[str] = []
    numbers: list[int] = []
    deltas: list[str] = []
    final: Any = None
    async for ev in stream:
        kinds.append(ev.type)
        numbers.append(ev.sequence_number)
        if ev.type == "response.output_text.delta":
            deltas.append(ev.delta)
        if ev.type == "response.completed":
            final = ev.response
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-1] == "response.completed" and numbers == list(range(len(kinds)))
    assert final is not None and "".join(deltas) == final.output_text != ""
    assert final.id.startswith("resp_") and final.usage.output_tokens == 16
    assert (await c.responses.retrieve(final.id)).output_text == final.output_text
    assert sent(fresh_sim)[-1]["stream"] is True
    only_native(fresh_sim)


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_function_tool_round_trip(gwn: GatewayHandle, fresh_sim: SimHandle,
                                          streamed: bool) -> None:
    c = client(gwn)
    first = await _create(c, streamed, model="sim-native", input="Weather in Paris?",
                          tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    second = await _create(c, streamed, model="sim-native", tools=[WEATHER],
                           previous_response_id=first.id,
                           input=[{"type": "function_call_output", "call_id": call.call_id,
                                   "output": "Sunny, 21 C"}])
    assert second.output_text and second.previous_response_id == first.id
    body = sent(fresh_sim)[-1]
    assert "previous_response_id" not in body
    assert [i.get("type", "message") for i in body["input"]] == [
        "message", "function_call", "function_call_output"]
    only_native(fresh_sim)


async def test_a_hosted_tool_and_a_reasoning_item_go_through_and_back(
        gwn: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(gwn)
    first = await c.responses.create(model="sim-native", input="News about Lyon?",
                                     tools=[{"type": "web_search"}],
                                     reasoning={"effort": "low"})
    kinds = [o.type for o in first.output]
    assert kinds == ["reasoning", "web_search_call", "message"]
    body = sent(fresh_sim)[-1]
    assert body["tools"] == [{"type": "web_search"}]
    assert "reasoning.encrypted_content" in body["include"]
    reasoning = first.output[0]
    assert reasoning.encrypted_content  # asked for on the caller's behalf
    second = await c.responses.create(model="sim-native", input="And Paris?",
                                      previous_response_id=first.id,
                                      tools=[{"type": "web_search"}],
                                      reasoning={"effort": "low"})
    assert second.output_text
    items = sent(fresh_sim)[-1]["input"]
    back = [i for i in items if i.get("type") == "reasoning"]
    assert back and back[0]["id"] == reasoning.id
    assert back[0]["encrypted_content"] == reasoning.encrypted_content
    assert any(i.get("type") == "web_search_call" for i in items)
    # The stored input items hold them too.
    listed = await c.responses.input_items.list(second.id, order="asc")
    assert "reasoning" in [i.type for i in listed.data]
    only_native(fresh_sim)


async def test_a_hosted_tool_on_a_translated_route_is_a_400(
        gwn: GatewayHandle, fresh_sim: SimHandle) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        await client(gwn).responses.create(model="sim", input="x",
                                           tools=[{"type": "web_search"}])
    assert e.value.param == "tools[0].type" and "natively" in e.value.message
    assert fresh_sim.stats()["requests"] == 0


async def test_usage_and_the_ledger_are_the_upstreams(gwn: GatewayHandle,
                                                      fresh_sim: SimHandle) -> None:
    rid = "native-" + os.urandom(6).hex()
    raw = await client(gwn).responses.with_raw_response.create(
        model="sim-native", input="Count me.", extra_headers={"x-request-id": rid})
    r = raw.parse()
    assert r.usage is not None
    assert raw.headers["x-tollway-input-tokens"] == str(r.usage.input_tokens)
    assert raw.headers["x-tollway-output-tokens"] == str(r.usage.output_tokens)
    row = await _row(gwn, rid)
    assert row["input_tokens"] == r.usage.input_tokens
    assert row["output_tokens"] == r.usage.output_tokens and not row["estimated"]
    assert row["cost_usd"] == pytest.approx(
        (r.usage.input_tokens * 1.0 + r.usage.output_tokens * 2.0) / 1e6)


async def test_an_aborted_native_stream_is_billed_for_what_was_generated(
        gwn: GatewayHandle, fresh_sim: SimHandle) -> None:
    fresh_sim.config(token_ms=20, output_tokens=200)
    secret, _ = create_key(gwn.url, MASTER, budgets=[{"usd": 1.0, "period": "day"}])
    rid = "abort-" + os.urandom(6).hex()
    body = {"model": "sim-native", "stream": True, "max_output_tokens": 200,
            "input": "tell me a long story"}
    await abandon_stream(f"{gwn.base_url}/responses", body,
                         {"authorization": f"Bearer {secret}", "x-request-id": rid}, 8)
    stats = fresh_sim.wait_for(lambda st: st["streams_cancelled"] >= 1, timeout=5)
    assert stats["streams_completed"] == 0 and stats["tokens_generated"] < 200
    row = await _row(gwn, rid)
    assert row["outcome"] == "aborted" and row["stream"] and row["estimated"]
    assert max(1, stats["tokens_generated"]) <= row["output_tokens"] <= 200
    only_native(fresh_sim)


async def test_auto_translates_for_a_compatible_api_base(
        gwn: GatewayHandle, fresh_sim: SimHandle) -> None:
    """`sim`'s deployment is responses: auto on a non-OpenAI api_base: chat."""
    r = await client(gwn).responses.create(model="sim", input="Hello?")
    assert r.output_text
    by = fresh_sim.stats()["requests_by_endpoint"]
    assert by == {"/v1/chat/completions": 1}


async def _create(c: openai.AsyncOpenAI, streamed: bool, **kw: Any) -> Any:
    if not streamed:
        return await c.responses.create(**kw)
    final: Any = None
    async for ev in await c.responses.create(stream=True, **kw):
        if ev.type == "response.completed":
            final = ev.response
    assert final is not None
    return final


async def _row(gw: GatewayHandle, request_id: str) -> dict[str, Any]:
    for _ in range(100):
        rows = [r for r in ledger_rows(gw.url, MASTER) if r["request_id"] == request_id]
        if rows:
            (row,) = rows
            return row
        await asyncio.sleep(0.05)  # another process writes it: polled
    raise AssertionError(f"no ledger row for {request_id}")


async def test_redacted_input_goes_translated_never_as_the_callers_body(
        gwn: GatewayHandle, fresh_sim: SimHandle) -> None:
    """PII redaction changes the chat view: that view goes upstream (translated), so the
    caller's native body — which still has the address — is never sent; a request only
    a native deployment can serve (a hosted tool) is refused instead."""
    c = client(gwn)
    r = await c.responses.create(model="sim-native-redact",
                                 input="Write to jane.doe@example.com about the invoice.")
    assert r.output_text
    assert sent(fresh_sim) == []  # not the native endpoint
    chat = [x["body"] for x in fresh_sim.stats()["recent_requests"]
            if x["endpoint"] == "/v1/chat/completions"]
    assert len(chat) == 1 and "jane.doe@example.com" not in str(chat[0])
    with pytest.raises(openai.BadRequestError) as refused:
        await c.responses.create(model="sim-native-redact", tools=[{"type": "web_search"}],
                                 input="Search for jane.doe@example.com")
    assert "redacted personal data" in refused.value.message
    assert sent(fresh_sim) == [] and len(fresh_sim.stats()["recent_requests"]) == 1
    # Without anything to redact, the same alias goes natively.
    await c.responses.create(model="sim-native-redact", input="Say hello.")
    assert len(sent(fresh_sim)) == 1
