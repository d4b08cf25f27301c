"""AnthropicProvider against a real local upstream speaking the Anthropic Messages API
(`tollway simulate`, run as a subprocess)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
from anthropic.types import Message as AnthropicMessage
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.helpers.sim import SimHandle, start_simulator
from tollway.errors import InvalidRequest, RateLimited, UpstreamError, UpstreamTimeout
from tollway.providers.anthropic import AnthropicProvider
from tollway.providers.http import Transport
from tollway.types import ChatRequest, Chunk, ChunkStream, Deployment, ReplyStream
from tollway.wire.anthropic import reply_to_anthropic, stream_to_anthropic
from tollway.wire.openai import parse_chat_request
from tollway.wire.sse import iter_chunks

KEY = "sk-ant-test"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
transport = Transport()
provider = AnthropicProvider(transport)


@pytest.fixture(scope="module")
def upstream() -> Iterator[SimHandle]:
    """Our own simulator: it requires a key, which the shared one does not."""
    with start_simulator(require_key=KEY, output_tokens=12) as handle:
        yield handle


@pytest.fixture
async def sim(upstream: SimHandle) -> AsyncIterator[SimHandle]:
    upstream.reset()
    upstream.config(ttft_ms=0, token_ms=0, output_tokens=12, require_key=KEY)
    yield upstream
    await transport.close()  # each test leaves no pooled connections behind


async def until(sim: SimHandle, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the simulator's stats off the loop: blocking it would keep our closed
    connections from actually closing."""
    return await asyncio.to_thread(sim.wait_for, predicate)


def dep(sim: SimHandle, **kw: Any) -> Deployment:
    base: dict[str, Any] = {"provider": "anthropic", "model": "claude-haiku-4-5",
                            "api_base": sim.anthropic_base, "api_key": KEY}
    base.update(kw)
    return Deployment(**base)


def req(**kw: Any) -> ChatRequest:
    base: dict[str, Any] = {"model": "alias", "max_tokens": 100, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Tell me about rivers."}]}
    base.update(kw)
    return parse_chat_request(orjson.dumps(base))


def last_request(sim: SimHandle) -> dict[str, Any]:
    recent: list[dict[str, Any]] = sim.stats()["recent_requests"]
    return recent[-1]


def chunks_of(stream: ReplyStream) -> ChunkStream:
    """The stream's events as chunk objects, usage event included."""
    stream.emit_usage = True
    return iter_chunks(stream.frames)


async def drain(stream: ReplyStream) -> list[Chunk]:
    return [c async for c in chunks_of(stream)]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"])


async def test_complete_sends_anthropic_request_and_maps_reply(sim: SimHandle) -> None:
    reply = await provider.complete(req(stop=["never-said"], user="u-7", temperature=0.2),
                                    dep(sim))
    completion = ChatCompletion.model_validate(reply.body)
    assert completion.object == "chat.completion" and completion.id.startswith("msg_")
    assert completion.model == "claude-haiku-4-5" == reply.model
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert choice.message.content and choice.message.tool_calls is None
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 12 and reply.usage.prompt_tokens > 0

    sent = last_request(sim)
    assert sent["endpoint"] == "/v1/messages"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["headers"]["content-type"] == "application/json"
    assert sent["body"] == {
        "model": "claude-haiku-4-5", "max_tokens": 100, "system": "You are terse.",
        "messages": [{"role": "user", "content": [{"type": "text",
                                                   "text": "Tell me about rivers."}]}],
        "temperature": 0.2, "stop_sequences": ["never-said"],
        "metadata": {"user_id": "u-7"}}


async def test_stream_matches_complete_and_reports_usage(sim: SimHandle) -> None:
    full = await provider.complete(req(), dep(sim))
    stream = await provider.stream(req(stream=True), dep(sim))
    chunks = await drain(stream)
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text_of(chunks) == full.body["choices"][0]["message"]["content"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finals] == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == full.body["usage"]
    assert stream.usage == full.usage and stream.model == "claude-haiku-4-5"
    assert last_request(sim)["body"]["stream"] is True


async def test_max_tokens_and_stop_sequence_finish_reasons(sim: SimHandle) -> None:
    short = await provider.complete(req(max_completion_tokens=3), dep(sim))
    assert short.body["choices"][0]["finish_reason"] == "length"
    assert short.usage is not None and short.usage.completion_tokens == 3

    words = (await provider.complete(req(), dep(sim))).body["choices"][0]["message"]["content"]
    stop = words.split()[3]
    cut = await provider.complete(req(stop=stop), dep(sim))
    choice = cut.body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == stop
    assert stop not in choice["message"]["content"]


async def test_tool_calls_complete_and_stream(sim: SimHandle) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "description": "Weather",
                                               "parameters": WEATHER}}]
    r = req(tools=tools, tool_choice={"type": "function", "function": {"name": "weather"}})
    reply = await provider.complete(r, dep(sim))
    choice = reply.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["id"].startswith("toolu_") and call["function"]["name"] == "weather"
    assert set(orjson.loads(call["function"]["arguments"])) == {"city"}
    sent = last_request(sim)["body"]
    assert sent["tools"] == [{"name": "weather", "description": "Weather",
                              "input_schema": WEATHER}]
    assert sent["tool_choice"] == {"type": "tool", "name": "weather"}

    chunks = await drain(await provider.stream(req(tools=tools, stream=True), dep(sim)))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [tc for d in deltas for tc in d.get("tool_calls") or []]
    assert calls[0]["id"] == call["id"] and calls[0]["function"]["name"] == "weather"
    assert "".join(tc["function"]["arguments"] for tc in calls) == call["function"]["arguments"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"

    # The conversation continues with the tool's answer, sent as a tool_result.
    follow = req(tools=tools, messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "5C and windy"}])
    after = await provider.complete(follow, dep(sim))
    assert after.body["choices"][0]["finish_reason"] == "stop"
    sent_msgs = last_request(sim)["body"]["messages"]
    assert sent_msgs[1]["content"][0]["type"] == "tool_use"
    assert sent_msgs[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call["id"], "content": "5C and windy"}]}


async def test_anthropic_client_round_trip_through_the_wire(sim: SimHandle) -> None:
    """Upstream Anthropic -> OpenAI shape -> back to Anthropic for an Anthropic client."""
    reply = await provider.complete(req(), dep(sim))
    msg = AnthropicMessage.model_validate(reply_to_anthropic(reply))
    assert msg.stop_reason == "end_turn" and msg.content[0].type == "text"
    assert msg.usage.output_tokens == 12

    stream = await provider.stream(req(stream=True), dep(sim))
    frames = [f async for f in stream_to_anthropic(chunks_of(stream), "alias")]
    events = [f.split(b"\n", 1)[0].decode() for f in frames]
    assert events[0] == "event: message_start" and events[-1] == "event: message_stop"
    delta = orjson.loads(frames[-2].split(b"data: ", 1)[1])
    assert delta["usage"]["output_tokens"] == 12
    assert delta["usage"]["input_tokens"] == msg.usage.input_tokens


async def test_api_base_with_v1_suffix(sim: SimHandle) -> None:
    reply = await provider.complete(req(), dep(sim, api_base=sim.anthropic_base + "/v1/"))
    assert reply.body["choices"][0]["message"]["content"]


async def test_wrong_key_is_an_operator_error(sim: SimHandle) -> None:
    with pytest.raises(UpstreamError) as e:
        await provider.complete(req(), dep(sim, api_key="sk-wrong"))
    assert e.value.status == 502 and e.value.code == "upstream_auth_failed"
    assert e.value.upstream_status == 401 and "sk-wrong" not in e.value.message


@pytest.mark.parametrize("streaming", [False, True])
async def test_upstream_http_errors_map(sim: SimHandle, streaming: bool) -> None:
    call = provider.stream if streaming else provider.complete
    sim.config(next_faults=["429", "503", "500"], retry_after=3)
    with pytest.raises(RateLimited) as limited:
        await call(req(stream=streaming), dep(sim))
    assert limited.value.retry_after == 3 and limited.value.upstream_status == 429
    with pytest.raises(UpstreamError) as overloaded:
        await call(req(stream=streaming), dep(sim))
    assert overloaded.value.upstream_status == 503 and "Overloaded" in overloaded.value.message
    with pytest.raises(UpstreamError) as failed:
        await call(req(stream=streaming), dep(sim))
    assert failed.value.upstream_status == 500


async def test_output_limit_default_and_upstream_400(sim: SimHandle) -> None:
    # Outside the gateway (which always sets a limit) the provider falls back to 4096.
    await provider.complete(req(max_tokens=None), dep(sim))
    assert last_request(sim)["body"]["max_tokens"] == 4096
    # What the upstream refuses comes back as the caller's 400, with its message.
    zero = req()
    zero.max_tokens = 0
    with pytest.raises(InvalidRequest) as e:
        await provider.complete(zero, dep(sim))
    assert e.value.status == 400 and e.value.upstream_status == 400
    assert "max_tokens" in e.value.message


async def test_unsupported_parameter_fails_before_any_request(sim: SimHandle) -> None:
    with pytest.raises(InvalidRequest, match="'n' is not supported"):
        await provider.complete(req(n=2), dep(sim))
    assert sim.stats()["requests"] == 0


async def test_connection_reset_and_dropped_stream(sim: SimHandle) -> None:
    sim.config(next_faults=["reset", "drop_stream"], drop_after_tokens=3)
    with pytest.raises(UpstreamError):
        await provider.complete(req(), dep(sim))
    stream = await provider.stream(req(stream=True), dep(sim))
    got: list[Chunk] = []
    with pytest.raises(UpstreamError):
        async for c in chunks_of(stream):
            got.append(c)
    assert got and got[0]["choices"][0]["delta"]["role"] == "assistant"


async def test_hangs_time_out(sim: SimHandle) -> None:
    sim.config(next_faults=["hang", "hang"])
    with pytest.raises(UpstreamTimeout, match="first token"):
        await provider.stream(req(stream=True), dep(sim, first_token_timeout=0.3))
    with pytest.raises(UpstreamTimeout, match="did not answer"):
        await provider.complete(req(), dep(sim, total_timeout=0.3))
    await until(sim, lambda s: s["requests_cancelled"] == 2)


async def test_closing_the_stream_drops_the_upstream(sim: SimHandle) -> None:
    sim.config(token_ms=50, output_tokens=200)
    stream = await provider.stream(req(stream=True, max_tokens=500), dep(sim))
    chunks = chunks_of(stream)
    first = await anext(chunks)
    assert first["choices"][0]["delta"]["role"] == "assistant"
    await anext(chunks)
    await chunks.aclose()
    stats = await until(sim, lambda s: s["streams_cancelled"] == 1)
    assert stats["streams_completed"] == 0
