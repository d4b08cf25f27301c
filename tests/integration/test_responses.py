"""OpenAI's Responses API through the gateway, with the official SDK (and real agent
frameworks) against `tollway simulate`: text and streams, a function-tool round trip
over `previous_response_id`, retrieve / delete / input_items, an Anthropic deployment,
the bundled local model, a continuation on another replica of a fleet, the policy
pipeline (an aborted stream billed, budget and rate-limit refusals), and bad input."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import gateway_config
from tests.helpers.admin import create_key, ledger_rows
from tests.helpers.clients import abandon_stream, openai_client, track
from tests.helpers.gateway import GatewayHandle, fleet, start_gateway
from tests.helpers.postgres import scratch_database, url_of
from tests.helpers.sim import SimHandle

MASTER = "master-" + os.urandom(8).hex()
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False},
           "strict": True}


@pytest.fixture(scope="module")
def gwk(sim: SimHandle) -> Iterator[GatewayHandle]:
    """The test gateway with a master key (the ledger and keys are read through the
    admin API) and a rate-limited alias."""
    cfg = gateway_config(sim.url)
    cfg["prices"] = {"sim-model": {"input": 1.0, "output": 2.0}}
    cfg["models"]["sim-limited"] = cfg["models"]["sim"]  # type: ignore[index]
    cfg["rate_limits"] = {"models": {"sim-limited": {"rpm": 2}}}
    cfg["models"]["sim-cached"] = {**cfg["models"]["sim"], "cache": {"enabled": True}}  # type: ignore[index, dict-item]
    handle = start_gateway(cfg, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


def client(gw: GatewayHandle, key: str = MASTER) -> openai.AsyncOpenAI:
    return openai_client(gw.base_url, key)


async def test_text_answer_and_its_usage(gwk: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(gwk)
    r = await c.responses.create(model="sim", input="Say hello.", instructions="Be brief.",
                                 max_output_tokens=40, metadata={"run": "1"})
    assert r.object == "response" and r.id.startswith("resp_") and r.status == "completed"
    assert r.output_text and r.output[0].type == "message"
    assert r.instructions == "Be brief." and r.metadata == {"run": "1"}
    assert r.max_output_tokens == 40 and r.store is True
    assert r.usage is not None and r.usage.output_tokens == 16  # the simulator's default
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    seen = fresh_sim.stats()
    assert seen["requests"] == 1


async def test_stream_deltas_add_up_to_the_final_text(gwk: GatewayHandle,
                                                       fresh_sim: SimHandle) -> None:
    c = client(gwk)
    stream = await c.responses.create(model="sim", input="Stream a story.", stream=True)
    kinds: list[str] = []
    deltas: list[str] = []
    final: Any = None
    numbers: list[int] = []
    async for ev in stream:
        kinds.append(ev.type)
        numbers.append(ev.sequence_number)
        if ev.type == "response.output_text.delta":
            deltas.append(ev.delta)
        if ev.type == "response.completed":
            final = ev.response
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert numbers == list(range(len(kinds)))
    assert final is not None and "".join(deltas) == final.output_text != ""
    assert final.usage.output_tokens == 16
    # ... and the stored response is the one the stream completed with.
    again = await c.responses.retrieve(final.id)
    assert again.output_text == final.output_text and again.usage == final.usage


async def test_the_sdk_stream_helper_assembles_the_response(gwk: GatewayHandle,
                                                             fresh_sim: SimHandle) -> None:
    c = client(gwk)
    async with c.responses.stream(model="sim", input="Helper, please.") as stream:
        text = "".join([ev.delta async for ev in stream
                        if ev.type == "response.output_text.delta"])
        final = await stream.get_final_response()
    assert text and final.output_text == text


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_function_tool_round_trip(gwk: GatewayHandle, fresh_sim: SimHandle,
                                          streamed: bool) -> None:
    c = client(gwk)
    first = await _create(c, streamed, model="sim", input="Weather in Paris?",
                          tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert set(eval_json(call.arguments)) == {"city"}  # the simulator fills the schema
    # The client answers the call; the gateway puts the stored conversation in front.
    second = await _create(c, streamed, model="sim", tools=[WEATHER],
                           previous_response_id=first.id,
                           input=[{"type": "function_call_output", "call_id": call.call_id,
                                   "output": '{"temp_c": 21}'}])
    assert second.output_text and second.previous_response_id == first.id
    assert fresh_sim.stats()["requests"] == 2
    items = [i async for i in c.responses.input_items.list(second.id, order="asc")]
    assert [i.type for i in items] == ["message", "function_call", "function_call_output"]
    assert items[1].call_id == call.call_id


async def _create(c: openai.AsyncOpenAI, streamed: bool, **kw: Any) -> Any:
    if not streamed:
        return await c.responses.create(**kw)
    final = None
    async for ev in await c.responses.create(stream=True, **kw):
        if ev.type == "response.completed":
            final = ev.response
    return final


def eval_json(text: str) -> Any:
    import json

    return json.loads(text)


async def test_retrieve_delete_and_input_items(gwk: GatewayHandle,
                                               fresh_sim: SimHandle) -> None:
    c = client(gwk)
    first = await c.responses.create(model="sim", input="One.")
    second = await c.responses.create(model="sim", input="Two.", previous_response_id=first.id)
    got = await c.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text
    newest_first = [i async for i in c.responses.input_items.list(second.id)]
    assert [i.role for i in newest_first] == ["user", "assistant", "user"]
    assert newest_first[0].content[0].text == "Two."
    page = await c.responses.input_items.list(second.id, limit=1, order="asc")
    assert len(page.data) == 1 and page.has_more and page.data[0].content[0].text == "One."
    # Another key (another owner) cannot see it.
    other, _ = create_key(gwk.url, MASTER, name="stranger")
    with pytest.raises(openai.NotFoundError):
        await client(gwk, other).responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        await client(gwk, other).responses.create(model="sim", input="x",
                                                  previous_response_id=second.id)
    await c.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        await c.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        await c.responses.delete(second.id)
    await c.responses.retrieve(first.id)  # the one it continued is its own


async def test_store_false_keeps_nothing(gwk: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(gwk)
    r = await c.responses.create(model="sim", input="Forget me.", store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        await c.responses.retrieve(r.id)


async def test_previous_response_not_found(gwk: GatewayHandle, fresh_sim: SimHandle) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        await client(gwk).responses.create(model="sim", input="x",
                                           previous_response_id="resp_nothere")
    assert e.value.code == "previous_response_not_found"
    assert e.value.param == "previous_response_id" and "resp_nothere" in e.value.message
    assert fresh_sim.stats()["requests"] == 0


async def test_json_schema_output(gwk: GatewayHandle, fresh_sim: SimHandle) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    r = await client(gwk).responses.create(
        model="sim", input="A city.",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema,
                         "strict": True}})
    assert set(eval_json(r.output_text)) == {"city"}
    assert r.text is not None and r.text.format.type == "json_schema"


# --- real clients ------------------------------------------------------------------------


async def test_an_openai_agents_sdk_agent_with_a_function_tool(
        gwk: GatewayHandle, fresh_sim: SimHandle) -> None:
    from agents import (
        Agent,
        Runner,
        function_tool,
        set_default_openai_client,
        set_tracing_disabled,
    )

    called: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return f"Sunny in {city}."

    set_tracing_disabled(True)
    set_default_openai_client(client(gwk), use_for_tracing=False)
    agent = Agent(name="forecaster", instructions="Answer with the weather.",
                  tools=[get_weather], model="sim")
    result = await Runner.run(agent, "What is the weather in Paris?")
    assert len(called) == 1 and isinstance(result.final_output, str) and result.final_output
    assert fresh_sim.stats()["requests"] == 2  # the tool call, then the answer
    streamed = Runner.run_streamed(agent, "And in Lima?")
    kinds = {ev.type async for ev in streamed.stream_events()}
    assert len(called) == 2 and streamed.final_output and "raw_response_event" in kinds
    # The SDK continuing server-side: only the new items go, the gateway has the rest.
    chained = await Runner.run(agent, "And in Rome?", auto_previous_response_id=True)
    assert len(called) == 3 and chained.final_output
    assert chained.last_response_id is not None
    sent = fresh_sim.stats()["recent_requests"][-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]


async def test_langchain_chat_openai_on_the_responses_api(
        gwk: GatewayHandle, fresh_sim: SimHandle) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="sim", base_url=gwk.base_url, api_key=MASTER,  # type: ignore[arg-type]
                     use_responses_api=True, max_retries=0)
    answer = await llm.ainvoke("Hello there.")
    assert isinstance(answer, AIMessage) and answer.text
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] == 16
    chunks = [c async for c in llm.astream("Stream it.")]
    whole = chunks[0]
    for c in chunks[1:]:
        whole += c
    assert len(chunks) > 3 and whole.text and whole.usage_metadata is not None
    tooled = llm.bind_tools([{"type": "function", "name": "get_weather",
                              "description": "Weather in a city.",
                              "parameters": WEATHER["parameters"]}])
    asked = await tooled.ainvoke([HumanMessage("Weather in Oslo?")])
    assert isinstance(asked, AIMessage) and asked.tool_calls[0]["name"] == "get_weather"
    done = await tooled.ainvoke([HumanMessage("Weather in Oslo?"), asked,
                                 ToolMessage("cold", tool_call_id=asked.tool_calls[0]["id"])])
    assert done.text and fresh_sim.stats()["requests"] == 4


# --- a fleet -----------------------------------------------------------------------------

REDIS_DB = "redis://127.0.0.1:6379/9"  # a database of its own, flushed around the test


@pytest.fixture(scope="module")
def replicas(sim: SimHandle) -> Iterator[list[GatewayHandle]]:
    """Two gateways on one shared store (PostgreSQL + Redis)."""
    import redis

    redis.Redis.from_url(REDIS_DB).flushdb()
    cfg = gateway_config(sim.url)
    with scratch_database("tollway_responses") as db:
        cfg["store"] = {"redis_url": REDIS_DB, "postgres_url": url_of(db)}
        try:
            with fleet(cfg, 2, env={"TOLLWAY_MASTER_KEY": MASTER}) as handles:
                yield handles
        finally:
            redis.Redis.from_url(REDIS_DB).flushdb()


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_response_continues_on_another_replica(
        replicas: list[GatewayHandle], fresh_sim: SimHandle, streamed: bool) -> None:
    key, _ = create_key(replicas[0].url, MASTER, name="roaming")
    one, two = client(replicas[0], key), client(replicas[1], key)
    first = await _create(one, streamed, model="sim", input="Weather in Oslo?",
                          tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call"
    second = await _create(two, streamed, model="sim", previous_response_id=first.id,
                           tools=[WEATHER],
                           input=[{"type": "function_call_output", "call_id": call.call_id,
                                   "output": "cold"}])
    sent = fresh_sim.stats()["recent_requests"][-1]["body"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
    assert "store" not in sent and "previous_response_id" not in sent
    third = await _create(one, streamed, model="sim", previous_response_id=second.id,
                          input="Thanks!")
    assert (await two.responses.retrieve(third.id)).output_text == third.output_text
    items = [i async for i in one.responses.input_items.list(third.id, order="asc")]
    assert [i.type for i in items] == ["message", "function_call", "function_call_output",
                                       "message", "message"]
    await two.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await one.responses.retrieve(first.id)


# --- other providers -------------------------------------------------------------------


async def test_through_an_anthropic_deployment(gwk: GatewayHandle,
                                               fresh_sim: SimHandle) -> None:
    c = client(gwk)
    r = await c.responses.create(model="sim-claude", input="Hello Claude.",
                                 instructions="Be brief.")
    assert r.output_text and r.usage is not None and r.usage.output_tokens == 16
    deltas, final = [], None
    async for ev in await c.responses.create(model="sim-claude", input="Go on.", stream=True,
                                             previous_response_id=r.id):
        if ev.type == "response.output_text.delta":
            deltas.append(ev.delta)
        elif ev.type == "response.completed":
            final = ev.response
    assert final is not None and "".join(deltas) == final.output_text
    assert final.usage.input_tokens > r.usage.input_tokens  # the first turn went along
    first = await c.responses.create(model="sim-claude", input="Weather in Rome?",
                                     tools=[WEATHER], tool_choice="required")
    call = first.output[0]
    assert call.type == "function_call" and call.call_id.startswith("toolu_")
    done = await c.responses.create(model="sim-claude", previous_response_id=first.id,
                                    input=[{"type": "function_call_output",
                                            "call_id": call.call_id, "output": "sunny"}])
    assert done.output_text and fresh_sim.stats()["requests"] == 4


@pytest.fixture(scope="module")
def embedded() -> Iterator[GatewayHandle]:
    handle = start_gateway(None)  # no config: the bundled local model
    try:
        yield handle
    finally:
        handle.stop()


async def test_with_the_bundled_local_model(embedded: GatewayHandle) -> None:
    c = track(openai.AsyncOpenAI(base_url=embedded.base_url, api_key="unused",
                                 max_retries=0, timeout=120))
    r = await c.responses.create(model="local", input="What is 2+2?", max_output_tokens=8)
    assert r.output_text and r.usage is not None and 0 < r.usage.output_tokens <= 8
    deltas, final = [], None
    async for ev in await c.responses.create(model="local", input="And 3+3?", stream=True,
                                             max_output_tokens=8, previous_response_id=r.id):
        if ev.type == "response.output_text.delta":
            deltas.append(ev.delta)
        elif ev.type in ("response.completed", "response.incomplete"):
            final = ev.response
    assert final is not None and "".join(deltas) == final.output_text != ""


# --- the policy pipeline -----------------------------------------------------------------


async def test_an_aborted_stream_is_billed_for_what_was_generated(
        gwk: GatewayHandle, fresh_sim: SimHandle) -> None:
    fresh_sim.config(token_ms=20, output_tokens=200)
    secret, rec = create_key(gwk.url, MASTER, budgets=[{"usd": 1.0, "period": "day"}])
    rid = "abort-" + os.urandom(6).hex()
    body = {"model": "sim", "stream": True, "max_output_tokens": 200,
            "input": "tell me a long story"}
    await abandon_stream(f"{gwk.base_url}/responses", body,
                         {"authorization": f"Bearer {secret}", "x-request-id": rid}, 8)
    stats = fresh_sim.wait_for(lambda st: st["streams_cancelled"] >= 1, timeout=5)
    assert stats["streams_completed"] == 0 and stats["tokens_generated"] < 200
    row = await _row(gwk, rid)
    assert row["outcome"] == "aborted" and row["status"] == 499 and row["stream"]
    assert row["estimated"] and row["key_id"] == rec["id"]
    assert max(4, stats["tokens_generated"]) <= row["output_tokens"] <= 200
    assert row["cost_usd"] == pytest.approx(
        (row["input_tokens"] * 1.0 + row["output_tokens"] * 2.0) / 1e6)


async def _row(gw: GatewayHandle, request_id: str) -> dict[str, Any]:
    """The request's ledger row: written once the gateway finished it, a moment after
    the client hung up (another process: polled)."""
    for _ in range(100):
        rows = [r for r in ledger_rows(gw.url, MASTER) if r["request_id"] == request_id]
        if rows:
            (row,) = rows
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"no ledger row for {request_id}")


async def test_budget_and_rate_limit_refusals_in_openai_shape(
        gwk: GatewayHandle, fresh_sim: SimHandle) -> None:
    secret, _ = create_key(gwk.url, MASTER, budgets=[{"usd": 1e-9, "period": "day"}])
    with pytest.raises(openai.RateLimitError) as e:
        await client(gwk, secret).responses.create(model="sim", input="Too dear.")
    assert e.value.code == "budget_exceeded" and "Budget exceeded" in e.value.message
    body: Any = e.value.body
    assert set(body) == {"message", "type", "param", "code"}
    c = client(gwk)
    await c.responses.create(model="sim-limited", input="one")
    await c.responses.create(model="sim-limited", input="two")
    with pytest.raises(openai.RateLimitError) as e:
        await c.responses.create(model="sim-limited", input="three", stream=True)
    assert e.value.code == "rate_limit_exceeded"
    assert fresh_sim.stats()["requests"] == 2


async def test_a_stream_that_breaks_ends_with_response_failed(
        gwk: GatewayHandle, fresh_sim: SimHandle) -> None:
    fresh_sim.config(next_faults=["drop_stream"], drop_after_tokens=4, output_tokens=50)
    kinds, last = [], None
    async for ev in await client(gwk).responses.create(model="sim", input="Break.",
                                                       stream=True):
        kinds.append(ev.type)
        last = ev
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds
    assert last is not None and last.type == "response.failed"
    assert last.response.status == "failed" and last.response.error is not None
    assert "response.completed" not in kinds
    with pytest.raises(openai.NotFoundError):  # a failed response is not kept
        await client(gwk).responses.retrieve(last.response.id)


async def test_a_repeated_request_is_answered_from_the_cache(
        gwk: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(gwk)
    kw: Any = {"model": "sim-cached", "input": "A cacheable question.", "instructions": "Hi."}
    first = await c.responses.with_raw_response.create(**kw)
    again = await c.responses.with_raw_response.create(**kw)
    assert first.headers["x-tollway-cache"] == "miss" and again.headers["x-tollway-cache"] == "hit"
    one, two = first.parse(), again.parse()
    assert one.output_text == two.output_text and one.id != two.id
    text = "".join([ev.delta async for ev in await c.responses.create(stream=True, **kw)
                    if ev.type == "response.output_text.delta"])
    assert text == one.output_text and fresh_sim.stats()["requests"] == 1
    assert (await c.responses.retrieve(two.id)).output_text == one.output_text


async def test_stored_responses_go_after_the_retention_period(
        sim: SimHandle, tmp_path: Any) -> None:
    """`conversations.retention_days` applies to stored responses too (the gateway as
    a library, with an injected clock)."""
    from tollway import config
    from tollway.gateway import Gateway
    from tollway.store.base import StoredResponse

    now = [1_800_000_000.0]
    cfg = config.parse({"store": {"path": str(tmp_path / "store")},
                        "conversations": {"retention_days": 30}}, env={})
    gw = Gateway(cfg, clock=lambda: now[0])
    await gw.start()
    try:
        await gw.store.responses.put(StoredResponse("o", "resp_old", now[0], b"{}", b"[]"))
        now[0] += 20 * 86400
        await gw.store.responses.put(StoredResponse("o", "resp_new", now[0], b"{}", b"[]"))
        now[0] += 15 * 86400  # old: 35 days; new: 15
        await gw.prune_conversations()
        assert await gw.store.responses.get("o", "resp_old") is None
        assert await gw.store.responses.get("o", "resp_new") is not None
    finally:
        await gw.close()


# --- bad input ----------------------------------------------------------------------------

BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"input": 5}, "input", "expected a string or an array of items"),
    ({"input": [{"type": "telepathy"}]}, "input[0].type", "'telepathy' items are not"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "input[0].content[0].type", "expected input_text, input_image, input_file"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id",
     "Missing required parameter"),
    ({"input": "x", "tools": [{"type": "web_search_preview"}]}, "tools[0].type",
     "hosted tool"),
    ({"input": "x", "tools": [WEATHER, {"type": "file_search", "vector_store_ids": []}]},
     "tools[1].type", "hosted tool"),
    ({"input": "x", "tool_choice": {"type": "web_search_preview"}}, "tool_choice.type",
     "function tools only"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "s",
                                        "schema": {"type": 12}}}},
     "text.format.schema", "not a valid JSON schema"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}},
     "text.format.name", "Missing required parameter"),
    ({"input": "x", "previous_response_id": "not an id"}, "previous_response_id",
     "is not a response id"),
    ({"input": "x", "background": True}, "background", "not supported"),
    ({"input": "x", "temprature": 1}, "temprature", "Unrecognized request argument"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens", "out of range"),
    ({}, "input", "Missing required parameter"),
]


@pytest.mark.parametrize(("body", "param", "says"), BAD, ids=[b[1] for b in BAD])
async def test_bad_input_is_a_400_naming_the_parameter(
        gwk: GatewayHandle, fresh_sim: SimHandle, body: dict[str, Any], param: str,
        says: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        await client(gwk).responses.create(model="sim", extra_body=body)
    assert e.value.param == param and says in e.value.message, e.value.message
    assert fresh_sim.stats()["requests"] == 0


async def test_an_upstream_refusal_names_the_responses_parameter(
        gwk: GatewayHandle, fresh_sim: SimHandle) -> None:
    with pytest.raises(openai.BadRequestError) as e:  # Anthropic has no reasoning effort
        await client(gwk).responses.create(model="sim-claude", input="x",
                                           reasoning={"effort": "high"})
    assert e.value.param == "reasoning.effort"


async def test_wrong_methods_and_unknown_ids(gwk: GatewayHandle) -> None:
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {MASTER}"}) as s:
        r = await s.get(f"{gwk.base_url}/responses")
        assert r.status == 405 and (await r.json())["error"]["type"]
        r = await s.post(f"{gwk.base_url}/responses/resp_1")
        assert r.status == 405 and r.headers["allow"] == "GET, DELETE"
        r = await s.get(f"{gwk.base_url}/responses/resp_1/input_items?order=sideways")
        assert r.status == 404
        r = await s.get(f"{gwk.base_url}/responses/%00x")
        assert r.status == 404 and (await r.json())["error"]["param"] == "response_id"
