"""Anthropic translation, both directions, checked against the official SDKs' own types,
parsers and stream accumulators (the SDKs talk to an in-process httpx transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import orjson
import pytest
from anthropic.types import Message as AnthropicMessage
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tollway.errors import (
    InvalidRequest,
    ModelNotFound,
    RateLimited,
    TollwayError,
    Unauthorized,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from tollway.providers.anthropic import StreamTranslator, _url, chat_completion, messages_body
from tollway.types import ChatRequest, Chunk, Deployment, Message, Reply, Usage
from tollway.wire.anthropic import (
    error_body,
    parse_messages_request,
    reply_to_anthropic,
    stream_to_anthropic,
)
from tollway.wire.openai import parse_chat_request

PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
       "AAAABJRU5ErkJggg==")
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


# --- helpers ---------------------------------------------------------------------------


def openai_req(**kw: Any) -> ChatRequest:
    base: dict[str, Any] = {"model": "alias", "max_tokens": 100,
                            "messages": [{"role": "user", "content": "hi"}]}
    base.update(kw)
    return parse_chat_request(orjson.dumps(base))


def sdk_client(handler: Callable[[httpx.Request], httpx.Response]) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="k", base_url="http://tollway.test", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def sdk_request_body(**kw: Any) -> bytes:
    """What the official SDK actually sends for messages.create(**kw)."""
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(500, json={"type": "error", "error": {"type": "api_error",
                                                                     "message": "stop"}})

    with pytest.raises(anthropic.InternalServerError):
        sdk_client(handler).messages.create(**kw)
    return seen[0]


async def collect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([frame async for frame in it])


async def aiter_chunks(chunks: list[Chunk], fail: TollwayError | None = None
                       ) -> AsyncIterator[Chunk]:
    for c in chunks:
        yield c
    if fail is not None:
        raise fail


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = orjson.loads(data_line[6:])
        assert data["type"] == event_line[7:]
        out.append((event_line[7:], data))
    return out


def sdk_final_message(raw_sse: bytes) -> AnthropicMessage:
    """Feed our SSE bytes to the Anthropic SDK's streaming helper and accumulator."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=raw_sse,
                              headers={"content-type": "text/event-stream"})

    with sdk_client(handler).messages.stream(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as s:
        return s.get_final_message()


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> Chunk:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
    return {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-x", "choices": [choice]}


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> Chunk:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-x", "choices": [], "usage": usage}


# --- canonical -> Anthropic request (provider) -----------------------------------------


def test_request_translation_covers_roles_images_and_tools() -> None:
    req = openai_req(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {"role": "user", "content": "Hello"},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}}]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "weather", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "5C"},
            {"role": "tool", "tool_call_id": "call_2",
             "content": [{"type": "text", "text": "7C"}]},
            {"role": "user", "content": "Thanks"},
        ],
        tools=[{"type": "function", "function": {"name": "weather", "description": "Weather",
                                                 "parameters": WEATHER}}],
        tool_choice="required", parallel_tool_calls=False,
        max_completion_tokens=55, temperature=0.3, top_p=0.9, stop="END", user="u-1", seed=7,
    )
    body = messages_body(req, "claude-real")
    assert body["model"] == "claude-real"
    assert body["max_tokens"] == 55
    assert body["system"] == "Be brief.\n\nUse metric."
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-1"}
    assert "seed" not in body and "stream" not in body
    assert body["tools"] == [{"name": "weather", "description": "Weather",
                              "input_schema": WEATHER}]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert [t["role"] for t in body["messages"]] == ["user", "assistant", "user"]
    user, assistant, results = body["messages"]
    assert user["content"] == [
        {"type": "text", "text": "Hello"},
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
    ]
    assert assistant["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {}},
    ]
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "5C"},
        {"type": "tool_result", "tool_use_id": "call_2",
         "content": [{"type": "text", "text": "7C"}]},
        {"type": "text", "text": "Thanks"},
    ]


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    (None, None, None),
    ("auto", None, {"type": "auto"}),
    ("none", None, {"type": "none"}),
    ("required", None, {"type": "any"}),
    ({"type": "function", "function": {"name": "weather"}}, None,
     {"type": "tool", "name": "weather"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    (None, True, None),
])
def test_tool_choice_mapping(choice: Any, parallel: Any, expected: Any) -> None:
    kw: dict[str, Any] = {"tools": [{"type": "function", "function": {"name": "weather"}}]}
    if choice is not None:
        kw["tool_choice"] = choice
    if parallel is not None:
        kw["parallel_tool_calls"] = parallel
    body = messages_body(openai_req(**kw), "c")
    assert body.get("tool_choice") == expected
    assert body["tools"][0]["input_schema"] == {"type": "object", "properties": {}}


def test_cache_control_survives_to_system_blocks() -> None:
    req = openai_req(messages=[
        {"role": "system", "content": [{"type": "text", "text": "long",
                                        "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "q"}])
    assert messages_body(req, "c")["system"] == [
        {"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}]


def test_pdf_file_part_becomes_a_document_block() -> None:
    req = openai_req(messages=[{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=",
                                  "filename": "a.pdf"}}]}])
    assert messages_body(req, "c")["messages"][0]["content"] == [
        {"type": "document",
         "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]


@pytest.mark.parametrize(("kw", "param"), [
    ({"n": 2}, "n"),
    ({"temperature": 1.5}, "temperature"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema"),
    ({"logprobs": True}, "logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
])
def test_unsupported_parameters_are_a_clear_400(kw: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        messages_body(openai_req(**kw), "c")
    assert e.value.param == param and e.value.status == 400
    assert param.split("[")[0] in e.value.message


def test_harmless_parameters_are_dropped() -> None:
    body = messages_body(openai_req(seed=1, store=False, logprobs=False, presence_penalty=0,
                                    response_format={"type": "text"}, service_tier="auto",
                                    parallel_tool_calls=True), "c")
    assert set(body) == {"model", "messages", "max_tokens"}


def test_api_base_gets_v1_messages_once() -> None:
    def url(base: str | None) -> str:
        return _url(Deployment(provider="anthropic", model="c", api_base=base))
    assert url(None) == "https://api.anthropic.com/v1/messages"
    assert url("http://h:1") == "http://h:1/v1/messages"
    assert url("http://h:1/v1/") == "http://h:1/v1/messages"


# --- Anthropic response -> OpenAI (provider) -------------------------------------------


def test_anthropic_message_to_chat_completion() -> None:
    msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
           "content": [{"type": "text", "text": "Let me check."},
                       {"type": "tool_use", "id": "toolu_1", "name": "weather",
                        "input": {"city": "Oslo"}}],
           "stop_reason": "tool_use", "stop_sequence": None,
           "usage": {"input_tokens": 10, "cache_read_input_tokens": 100,
                     "cache_creation_input_tokens": 5, "output_tokens": 7}}
    out = chat_completion(msg, "dep-model")
    parsed = ChatCompletion.model_validate(out)
    assert parsed.model == "claude-x"
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id == "toolu_1" and call.function.name == "weather"  # type: ignore[union-attr]
    assert orjson.loads(call.function.arguments) == {"city": "Oslo"}  # type: ignore[union-attr]
    assert out["usage"] == {"prompt_tokens": 115, "completion_tokens": 7, "total_tokens": 122,
                            "prompt_tokens_details": {"cached_tokens": 100,
                                                      "cache_write_tokens": 5}}
    usage = Usage.from_openai(out["usage"])
    assert usage is not None and usage.cached_tokens == 100


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"),
])
def test_finish_reason_mapping(stop: str, finish: str) -> None:
    msg = {"id": "m", "content": [{"type": "text", "text": "x"}], "stop_reason": stop,
           "usage": {"input_tokens": 1, "output_tokens": 1}}
    assert chat_completion(msg, "m")["choices"][0]["finish_reason"] == finish


# --- Anthropic stream -> OpenAI chunks (provider) ---------------------------------------


def anthropic_events() -> list[dict[str, Any]]:
    return [
        {"type": "message_start", "message": {
            "id": "msg_9", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 20, "cache_read_input_tokens": 4,
                      "cache_creation_input_tokens": 0, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_7", "name": "weather", "input": {}}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '"Oslo"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 15}},
        {"type": "message_stop"},
    ]


def translate(events: list[dict[str, Any]]) -> tuple[list[Chunk], StreamTranslator]:
    t = StreamTranslator("dep-model", "anthropic/claude-x")
    chunks = [c for ev in events for c in t.feed(ev)]
    return chunks, t


def test_stream_events_become_openai_chunks() -> None:
    chunks, t = translate(anthropic_events())
    assert t.done
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hel", "lo"]
    assert chunks[3]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "toolu_7", "type": "function",
         "function": {"name": "weather", "arguments": ""}}]
    assert [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
            for c in chunks[4:6]] == ['{"city": ', '"Oslo"}']
    assert chunks[6]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[7]["choices"] == [] and chunks[7]["usage"] == {
        "prompt_tokens": 24, "completion_tokens": 15, "total_tokens": 39,
        "prompt_tokens_details": {"cached_tokens": 4}}
    assert len(chunks) == 8
    assert {c["id"] for c in chunks} == {"msg_9"} and {c["model"] for c in chunks} == {
        "claude-x"}

    # The OpenAI SDK's own accumulator rebuilds the complete answer from our chunks.
    state = ChatCompletionStreamState()
    for c in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(c))
    final = state.get_final_completion()
    msg = final.choices[0].message
    assert msg.content == "Hello" and final.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls is not None
    assert msg.tool_calls[0].function.arguments == '{"city": "Oslo"}'


def test_stream_error_event_raises_upstream_error() -> None:
    t = StreamTranslator("m", "anthropic/m")
    t.feed(anthropic_events()[0])
    with pytest.raises(UpstreamError, match="overloaded_error: Overloaded"):
        t.feed({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def test_stream_stop_sequence_is_kept() -> None:
    events = [*anthropic_events()[:6],
              {"type": "message_delta", "delta": {"stop_reason": "stop_sequence",
                                                  "stop_sequence": "END"},
               "usage": {"output_tokens": 2}},
              {"type": "message_stop"}]
    chunks, _ = translate(events)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"][0]["stop_reason"] == "END"


# --- Anthropic client -> canonical (inbound wire) ---------------------------------------


def test_sdk_request_parses_to_canonical() -> None:
    raw = sdk_request_body(
        model="claude-alias", max_tokens=64, stop_sequences=["##"], metadata={"user_id": "u9"},
        # SDK 2.x dropped the sampling parameters; older clients and raw HTTP still send them.
        extra_body={"temperature": 0.5, "top_p": 0.8, "top_k": 5},
        system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        tools=[{"name": "weather", "description": "W", "input_schema": WEATHER}],
        tool_choice={"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather",
                 "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "5C"},
                {"type": "text", "text": "And this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}}]},
        ])
    req = parse_messages_request(raw)
    assert (req.model, req.max_tokens, req.temperature, req.top_p) == (
        "claude-alias", 64, 0.5, 0.8)
    assert req.extra == {"top_k": 5} and req.stop == ["##"] and req.user == "u9"
    assert not req.stream and req.stream_options is None
    assert req.tools == [{"type": "function", "function": {
        "name": "weather", "description": "W", "parameters": WEATHER}}]
    assert req.tool_choice == {"type": "function", "function": {"name": "weather"}}
    assert req.parallel_tool_calls is False
    roles = [m.role for m in req.messages]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    assert req.messages[0].content == [{"type": "text", "text": "sys",
                                        "cache_control": {"type": "ephemeral"}}]
    asst = req.messages[2]
    assert asst.content == "Checking." and asst.tool_calls is not None
    assert asst.tool_calls[0].id == "toolu_1"
    assert orjson.loads(asst.tool_calls[0].function.arguments) == {"city": "Oslo"}
    assert (req.messages[3].tool_call_id, req.messages[3].content) == ("toolu_1", "5C")
    assert req.messages[4].content == [
        {"type": "text", "text": "And this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]

    # And back out through the provider: the Anthropic body is what the client sent.
    sent = orjson.loads(raw)
    back = messages_body(req, "claude-alias")
    assert back["system"] == sent["system"] and back["tools"] == sent["tools"]
    assert back["tool_choice"] == sent["tool_choice"]
    assert back["messages"][1:] == sent["messages"][1:]
    assert back["messages"][0]["content"] == [{"type": "text", "text": "Weather in Oslo?"}]
    assert (back["top_k"], back["stop_sequences"], back["metadata"]) == (
        5, ["##"], {"user_id": "u9"})


def test_structured_output_and_top_level_cache_control_round_trip() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}},
              "required": ["a"], "additionalProperties": False}
    raw = sdk_request_body(model="m", max_tokens=9, cache_control={"type": "ephemeral"},
                           output_config={"format": {"type": "json_schema", "schema": schema}},
                           messages=[{"role": "user", "content": "give a"}])
    req = parse_messages_request(raw)
    assert req.response_format == {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": schema}}
    assert req.messages[-1].content == [{"type": "text", "text": "give a",
                                         "cache_control": {"type": "ephemeral"}}]
    back = messages_body(req, "m")
    assert back["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert back["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    # From the OpenAI side, json_schema maps to the same structured output.
    body = messages_body(openai_req(response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}),
        "m")
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_streaming_request_asks_for_usage() -> None:
    req = parse_messages_request(orjson.dumps({
        "model": "m", "max_tokens": 5, "stream": True,
        "messages": [{"role": "user", "content": "x"}]}))
    assert req.stream and req.stream_options is not None and req.stream_options.include_usage


def bad(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "m", "max_tokens": 5,
                            "messages": [{"role": "user", "content": "x"}]}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(("body", "param", "fragment"), [
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens",
     "Field required"),
    (bad(model=""), "model", "must not be empty"),
    (bad(max_tokens=0), "max_tokens", "at least 1"),
    (bad(max_tokens=True), "max_tokens", "expected an integer"),
    (bad(messages=[]), "messages", "at least one message"),
    (bad(messages=[{"role": "system", "content": "x"}]), "messages.0.role",
     "top-level 'system'"),
    (bad(messages=[{"role": "user", "content": 3}]), "messages.0.content",
     "string or an array"),
    (bad(messages=[{"role": "user", "content": ""}]), "messages.0.content",
     "must not be empty"),
    (bad(messages=[{"role": "user", "content": [{"type": "video"}]}]),
     "messages.0.content.0.type", "unsupported content block type 'video'"),
    (bad(messages=[{"role": "user", "content": [{"type": "text"}]}]),
     "messages.0.content.0.text", "expected a string"),
    (bad(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/bmp",
                                     "data": "x"}}]}]),
     "messages.0.content.0.source.media_type", "image/png"),
    (bad(messages=[{"role": "user", "content": [
        {"type": "tool_use", "id": "t", "name": "n", "input": {}}]}]),
     "messages.0.content.0.type", "assistant turns"),
    (bad(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "n", "input": "nope"}]}]),
     "messages.1.content.0.input", "expected an object"),
    (bad(system=[{"type": "image"}]), "system.0.type", "must be text"),
    (bad(tools=[{"name": "t"}]), "tools.0.input_schema", "expected an object"),
    (bad(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0.type",
     "server tools"),
    (bad(tool_choice={"type": "sometimes"}), "tool_choice.type", "'auto', 'any'"),
    (bad(tool_choice={"type": "any"}), "tool_choice", "needs 'tools'"),
    (bad(temperature=1.5), "temperature", "between 0 and 1"),
    (bad(top_k=-1), "top_k", "at least 0"),
    (bad(stop_sequences="END"), "stop_sequences", "expected an array"),
    (bad(metadata={"session": "x"}), "metadata.session", "only 'user_id'"),
    (bad(stream="yes"), "stream", "expected a boolean"),
    (bad(thinking={"type": "enabled", "budget_tokens": 1024}), "thinking", "not supported"),
    (bad(frequency_penalty=1), "frequency_penalty", "unknown or unsupported"),
    (bad(output_config={"effort": "high"}), "output_config.effort", "not supported"),
    (bad(output_config={"format": {"type": "regex"}}), "output_config.format.type",
     "json_schema"),
    (bad(messages=[{"role": "assistant", "content": ""}]), "messages",
     "non-empty message"),
])
def test_invalid_requests_name_the_field(body: dict[str, Any], param: str,
                                         fragment: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_messages_request(orjson.dumps(body))
    assert e.value.param == param
    assert e.value.message.startswith(f"{param}: ") and fragment in e.value.message


def test_final_assistant_prefill_may_be_empty_and_thinking_is_dropped() -> None:
    req = parse_messages_request(orjson.dumps(bad(messages=[
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm",
                                           "signature": "s"},
                                          {"type": "text", "text": "ok"}]},
        {"role": "user", "content": "y"},
        {"role": "assistant", "content": ""}])))
    assert [(m.role, m.content) for m in req.messages] == [
        ("user", "x"), ("assistant", "ok"), ("user", "y")]


# --- OpenAI reply -> Anthropic client (inbound wire) -----------------------------------


def openai_completion(message: dict[str, Any], finish: str, **choice_extra: Any
                      ) -> dict[str, Any]:
    return {"id": "chatcmpl-xyz", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "message": message, "finish_reason": finish,
                         **choice_extra}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39,
                      "prompt_tokens_details": {"cached_tokens": 10}}}


def test_reply_to_anthropic_with_tool_calls_validates_in_the_sdk() -> None:
    body = openai_completion({"role": "assistant", "content": "On it.", "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]}, "tool_calls")
    out = reply_to_anthropic(Reply(body=body, model="gpt-x", usage=None))
    msg = AnthropicMessage.model_validate(out)
    assert msg.id == "msg_xyz" and msg.model == "gpt-x" and msg.stop_reason == "tool_use"
    assert [b.type for b in msg.content] == ["text", "tool_use"]
    assert msg.content[0].text == "On it."  # type: ignore[union-attr]
    assert msg.content[1].input == {"city": "Oslo"}  # type: ignore[union-attr]
    assert msg.usage.input_tokens == 20 and msg.usage.cache_read_input_tokens == 10
    assert msg.usage.output_tokens == 9

    # The same bytes through the SDK's client give the same Message.
    client = sdk_client(lambda _r: httpx.Response(200, json=out))
    got = client.messages.create(model="m", max_tokens=5,
                                 messages=[{"role": "user", "content": "x"}])
    assert got == msg


@pytest.mark.parametrize(("finish", "extra", "reason", "sequence"), [
    ("stop", {}, "end_turn", None),
    ("stop", {"stop_reason": "##"}, "stop_sequence", "##"),
    ("length", {}, "max_tokens", None),
    ("content_filter", {}, "refusal", None),
])
def test_reply_stop_reasons(finish: str, extra: dict[str, Any], reason: str,
                            sequence: str | None) -> None:
    body = openai_completion({"role": "assistant", "content": "x"}, finish, **extra)
    out = reply_to_anthropic(Reply(body=body, model="gpt-x", usage=None))
    assert (out["stop_reason"], out["stop_sequence"]) == (reason, sequence)


def test_full_round_trip_through_provider_shapes() -> None:
    """Anthropic upstream message -> OpenAI reply -> Anthropic client: nothing lost."""
    upstream = {"id": "msg_up", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [{"type": "text", "text": "Hi"}], "stop_reason": "stop_sequence",
                "stop_sequence": "##", "usage": {"input_tokens": 3,
                                                 "cache_creation_input_tokens": 50,
                                                 "cache_read_input_tokens": 7,
                                                 "output_tokens": 2}}
    out = reply_to_anthropic(Reply(body=chat_completion(upstream, "m"), model="m",
                                   usage=None))
    out_usage = out.pop("usage")
    assert out == {k: v for k, v in upstream.items() if k != "usage"}
    assert out_usage == upstream["usage"]


# --- OpenAI chunks -> Anthropic SSE (inbound wire) ------------------------------------


async def test_stream_text_and_tools_in_anthropic_event_order() -> None:
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "weather",
                                            "arguments": '{"city":"Rome"}'}}]}),
        chunk({}, "tool_calls"),
        usage_chunk(40, 12, cached=8),
    ]
    raw = await collect(stream_to_anthropic(aiter_chunks(chunks), "claude-alias"))
    events = sse_events(raw)
    assert [e for e, _ in events] == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["id"] == "msg_abc" and start["model"] == "claude-alias"
    assert [d["index"] for e, d in events if e.startswith("content_block")] == [
        0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert events[5][1]["content_block"] == {"type": "tool_use", "id": "call_a",
                                             "name": "weather", "input": {}}
    assert events[-2][1] == {"type": "message_delta",
                             "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                             "usage": {"input_tokens": 32, "output_tokens": 12,
                                       "cache_read_input_tokens": 8}}

    final = sdk_final_message(raw)
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Let me check."  # type: ignore[union-attr]
    assert final.content[1].input == {"city": "Oslo"}  # type: ignore[union-attr]
    assert final.content[2].input == {"city": "Rome"}  # type: ignore[union-attr]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (32, 12)
    assert final.usage.cache_read_input_tokens == 8


async def test_stream_stop_sequence_and_empty_answer() -> None:
    raw = await collect(stream_to_anthropic(aiter_chunks([
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "ab"}),
        chunk({}, "stop", stop_reason="##"),
        usage_chunk(5, 1)]), "m"))
    final = sdk_final_message(raw)
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "##")
    assert final.content[0].text == "ab"  # type: ignore[union-attr]

    raw = await collect(stream_to_anthropic(aiter_chunks([
        chunk({"role": "assistant", "content": ""}), chunk({}, "length"),
        usage_chunk(5, 0)]), "m"))
    assert [e for e, _ in sse_events(raw)] == ["message_start", "message_delta",
                                               "message_stop"]
    assert sdk_final_message(raw).stop_reason == "max_tokens"


async def test_stream_error_mid_way_becomes_an_error_event() -> None:
    raw = await collect(stream_to_anthropic(aiter_chunks(
        [chunk({"role": "assistant", "content": ""}), chunk({"content": "par"})],
        fail=UpstreamError("upstream went away")), "m"))
    events = sse_events(raw)
    assert events[-1] == ("error", {"type": "error", "error": {
        "type": "api_error", "message": "upstream went away"}})
    with pytest.raises(anthropic.APIStatusError, match="upstream went away"):
        sdk_final_message(raw)


async def test_anthropic_upstream_to_anthropic_client_stream() -> None:
    """Anthropic SSE -> provider chunks -> inbound wire SSE -> SDK: same final message."""
    chunks, _ = translate(anthropic_events())
    raw = await collect(stream_to_anthropic(aiter_chunks(chunks), "claude-x"))
    final = sdk_final_message(raw)
    assert final.id == "msg_9"
    assert final.content[0].text == "Hello"  # type: ignore[union-attr]
    assert final.content[1].id == "toolu_7"  # type: ignore[union-attr]
    assert final.content[1].input == {"city": "Oslo"}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens,
            final.usage.cache_read_input_tokens) == (20, 15, 4)


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("err", "kind", "sdk_error"), [
    (InvalidRequest("bad"), "invalid_request_error", anthropic.BadRequestError),
    (Unauthorized("who"), "authentication_error", anthropic.AuthenticationError),
    (ModelNotFound("nope"), "not_found_error", anthropic.NotFoundError),
    (RateLimited("slow", retry_after=2), "rate_limit_error", anthropic.RateLimitError),
    (UpstreamError("boom"), "api_error", anthropic.InternalServerError),
    (Unavailable("busy"), "overloaded_error", anthropic.InternalServerError),
    (UpstreamTimeout("late"), "timeout_error", anthropic.InternalServerError),
])
def test_error_body_is_what_the_sdk_expects(err: TollwayError, kind: str,
                                            sdk_error: type[Exception]) -> None:
    body = error_body(err)
    assert orjson.loads(body) == {"type": "error", "error": {"type": kind,
                                                             "message": err.message}}
    client = sdk_client(lambda _r: httpx.Response(err.status, content=body))
    with pytest.raises(sdk_error) as e:
        client.messages.create(model="m", max_tokens=5,
                               messages=[{"role": "user", "content": "x"}])
    assert isinstance(e.value, anthropic.APIStatusError)
    assert e.value.body == orjson.loads(body)


def test_openai_sdk_accepts_translated_reply() -> None:
    """Guard that the provider's reply is a valid chat.completion for the OpenAI SDK."""
    msg = {"id": "msg_1", "model": "c", "content": [{"type": "text", "text": "hi"}],
           "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}
    client = openai.OpenAI(api_key="k", base_url="http://tollway.test/v1", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(
                               lambda _r: httpx.Response(200,
                                                         json=chat_completion(msg, "c")))))
    got = client.chat.completions.create(model="c", messages=[{"role": "user",
                                                               "content": "x"}])
    assert got.choices[0].message.content == "hi"
    assert Message(role="assistant", content=got.choices[0].message.content).text() == "hi"
