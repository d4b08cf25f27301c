"""The Responses API's translation onto chat: a request's parameters and items into a
`ChatRequest`, a chat.completion into a Response object, chat chunks into Responses
events in OpenAI's order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import orjson
import pytest

from tollway.errors import InvalidRequest, TollwayError
from tollway.types import Chunk, Usage
from tollway.wire import responses as wire
from tollway.wire.responses_items import decode_items, output_items
from tollway.wire.responses_stream import events, failed

TOOL = {"type": "function", "name": "get_weather", "description": "Weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True}


def nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def parse(**body: Any) -> wire.ResponsesRequest:
    req = wire.parse_request(orjson.dumps({"model": "m", **body}))
    req.items = wire.assemble(req, [], 100)
    return req


def messages(req: wire.ResponsesRequest) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(m) for m in req.chat.messages]


def test_a_string_input_with_instructions() -> None:
    req = parse(input="Hi", instructions="Be brief.", max_output_tokens=30, store=False,
                temperature=0.5, user="u1", metadata={"a": "b"})
    assert messages(req) == [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Hi"}]
    chat = req.chat
    assert (chat.max_tokens, chat.temperature, chat.user) == (30, 0.5, "u1")
    assert not req.store and chat.extra == {}  # store and metadata are never forwarded
    assert req.echo["metadata"] == {"a": "b"} and req.echo["store"] is False


def test_items_become_chat_messages() -> None:
    req = parse(input=[
        {"role": "developer", "content": "Rules."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Look:"},
            {"type": "input_image", "image_url": "https://x/y.png"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f",
         "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"x\":1}"},
        {"type": "reasoning", "id": "rs_1", "summary": []},  # dropped
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "two"}]},
    ])
    assert messages(req) == [
        {"role": "developer", "content": "Rules."},
        {"role": "user", "content": [
            {"type": "text", "text": "Look:"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "auto"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "c1", "function": {"name": "f", "arguments": "{}"}, "type": "function"},
            {"id": "c2", "function": {"name": "g", "arguments": "{\"x\":1}"},
             "type": "function"}]},
        {"role": "tool", "content": "one", "tool_call_id": "c1"},
        {"role": "tool", "content": "two", "tool_call_id": "c2"},
    ]
    # Every item kept has an id (the caller's, else a new one), for input_items.
    ids = [i.id for i in req.items]
    assert ids[2:4] == ["msg_1", "fc_1"] and all(ids)
    assert ids[1].startswith("msg_") and ids[4].startswith("fc_")


def test_a_stored_chain_goes_in_front_and_instructions_do_not_carry_over() -> None:
    first = parse(input="One", instructions="Old rules.")
    answer = wire.answered(wire.Draft("resp_1", 0, first.echo), {"choices": [{
        "message": {"role": "assistant", "content": "Uno"}, "finish_reason": "stop"}]},
        "m", None, 1)
    stored_items = wire.encode_items(first.items)
    previous = [*decode_items(stored_items), *output_items(orjson.dumps(answer))]
    second = wire.parse_request(orjson.dumps({"model": "m", "input": "Two",
                                              "previous_response_id": "resp_1"}))
    wire.assemble(second, previous, 100)
    assert messages(second) == [{"role": "user", "content": "One"},
                                {"role": "assistant", "content": "Uno"},
                                {"role": "user", "content": "Two"}]
    with pytest.raises(InvalidRequest) as e:
        wire.assemble(second, previous, 2)
    assert e.value.param == "previous_response_id" and e.value.code == "too_many_messages"


def test_tools_choice_format_and_reasoning_translate() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    req = parse(input="x", tools=[TOOL], tool_choice={"type": "function", "name": "get_weather"},
                parallel_tool_calls=False, reasoning={"effort": "low", "summary": "auto"},
                text={"format": {"type": "json_schema", "name": "out", "schema": schema},
                      "verbosity": "low"}, stream=True)
    chat = req.chat
    assert chat.tools == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather.", "parameters": TOOL["parameters"],
        "strict": True}}]
    assert chat.tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    assert chat.parallel_tool_calls is False
    assert chat.response_format == {"type": "json_schema", "json_schema": {
        "name": "out", "schema": schema}}
    assert chat.extra == {"reasoning_effort": "low", "verbosity": "low"}
    assert chat.stream and chat.stream_options is not None
    assert chat.stream_options.include_usage  # the translator reports usage at the end
    assert req.echo["tools"][0]["name"] == "get_weather"
    assert req.echo["text"]["format"]["type"] == "json_schema"
    assert req.echo["reasoning"] == {"effort": "low", "summary": "auto"}


@pytest.mark.parametrize(("body", "param"), [
    ({"input": 1}, "input"),
    ({"input": [{"role": "system", "content": [{"type": "input_image",
                                                "image_url": "u"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"role": "assistant", "content": [{"type": "input_image"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "bad name!",
                 "arguments": ""}]}, "input[0].name"),
    ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"input": "x", "tools": [TOOL], "tool_choice": {"type": "function", "name": "nope"}},
     "tool_choice.name"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "o",
                                        "schema": {"pattern": "("}}}}, "text.format.schema"),
    ({"input": "x", "tools": [{**TOOL, "parameters": {"type": 12}}]}, "tools[0].parameters"),
    ({"input": "x", "text": {"format": {"type": "grammar"}}}, "text.format.type"),
    ({"input": "x", "stream_options": {}}, "stream_options"),
    ({"input": "x", "metadata": {"k": 1}}, "metadata.k"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": "x", "messages": []}, "messages"),
    ({"input": "x", "truncation": "sometimes"}, "truncation"),
    ({"input": [[1]]}, "input[0]"),
    ({"input": "x", "tools": [{"type": "function", "name": "f",
                               "parameters": {"a": nested(70)}}]}, "tools[0].parameters.a[0][0]"),
])
def test_bad_input_names_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        wire.parse_request(orjson.dumps({"model": "m", **body}))
    assert e.value.param == param, e.value.message


@pytest.mark.parametrize(("body", "param"), [
    ({"input": ["hi", {"type": "computer_call"}]}, "input[1].type"),
    ({"input": ["hi", {"type": "item_reference", "id": "x"}]}, "input[1].type"),
    ({"input": "x", "tools": [{"type": "mcp", "server_label": "s"}]}, "tools[0].type"),
    ({"input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice.type"),
])
def test_what_only_a_native_deployment_takes_is_noted_not_refused(
        body: dict[str, Any], param: str) -> None:
    """Refused later, once the route is known to have no native deployment."""
    if isinstance(body["input"], list):
        body["input"][0] = {"role": "user", "content": body["input"][0]}
    req = parse(**body)
    assert req.only == param and req.chat.native is not None
    assert req.chat.native.only == param


def test_the_native_body_carries_the_conversation_and_not_the_gateways_fields() -> None:
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "e"}
    first = parse(input=[{"role": "user", "content": "One"}], reasoning={"effort": "low"},
                  tools=[{"type": "web_search"}], store=True)
    native = first.chat.native
    assert native is not None and native.only == "tools[0].type"
    assert "store" not in first.body or native.body["store"] is False
    assert native.body["include"] == ["reasoning.encrypted_content"]
    assert native.body["tools"] == [{"type": "web_search"}]
    second = wire.parse_request(orjson.dumps({
        "model": "m", "input": "Two", "previous_response_id": "resp_1"}))
    stored = [{"type": "message", "id": "msg_1", "role": "user",
               "content": [{"type": "input_text", "text": "One"}]}, reasoning]
    d = wire.Draft("resp_2", 0, second.echo)
    wire.assemble(second, stored, 100, d)
    assert second.chat.native is not None
    body = second.chat.native.body
    assert "previous_response_id" not in body and body["store"] is False
    assert body["input"] == [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "One"}]}, reasoning,
        {"type": "message", "role": "user", "content": "Two"}]
    # The chat view drops the reasoning item; the native record keeps it.
    assert messages(second) == [{"role": "user", "content": "One"},
                                {"role": "user", "content": "Two"}]
    d.native = True
    assert reasoning in orjson.loads(d.stored_items())


def test_an_empty_conversation_is_refused() -> None:
    req = wire.parse_request(b'{"model": "m", "input": []}')
    with pytest.raises(InvalidRequest) as e:
        wire.assemble(req, [], 10)
    assert e.value.param == "input"


def test_a_chat_completion_as_a_response_object() -> None:
    req = parse(input="x", max_output_tokens=5)
    d = wire.Draft("resp_1", 100, req.echo)
    body = {"choices": [{"finish_reason": "length", "message": {
        "role": "assistant", "content": "Let me", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": "{}"}}]}}]}
    usage = Usage(prompt_tokens=10, completion_tokens=5, cached_tokens=4, reasoning_tokens=2)
    r = wire.answered(d, body, "m-1", usage, 101)
    assert (r["id"], r["object"], r["created_at"], r["model"]) == ("resp_1", "response", 100,
                                                                   "m-1")
    assert r["status"] == "incomplete" and r["completed_at"] is None
    assert r["incomplete_details"] == {"reason": "max_output_tokens"}
    msg, call = r["output"]
    assert msg["type"] == "message" and msg["status"] == "incomplete"
    assert msg["content"] == [{"type": "output_text", "annotations": [], "logprobs": [],
                               "text": "Let me"}]
    assert call["type"] == "function_call" and call["call_id"] == "call_1"
    assert call["id"].startswith("fc_") and call["name"] == "f"
    assert r["usage"] == {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
                          "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 2},
                          "total_tokens": 15}
    assert r["max_output_tokens"] == 5 and r["tool_choice"] == "auto"


def test_errors_name_the_responses_parameter() -> None:
    def param(p: str | None) -> Any:
        return orjson.loads(wire.error_body(TollwayError("no", param=p)))["error"]["param"]

    assert param("reasoning_effort") == "reasoning.effort"
    assert param("response_format.json_schema") == "text.format.json_schema"
    assert param("messages[3].content") == "input"
    assert param("model") == "model" and param(None) is None


# --- streams ---------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> Chunk:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c", "object": "chat.completion.chunk", "choices": choices,
            **({"usage": usage} if usage else {})}


async def run(chunks: list[Chunk]) -> tuple[list[dict[str, Any]], list[bytes]]:
    async def source() -> AsyncIterator[Chunk]:
        for c in chunks:
            yield c

    kept: list[bytes] = []

    async def keep(response: bytes) -> None:
        kept.append(response)

    d = wire.Draft("resp_1", 100, parse(input="x").echo)
    out: list[dict[str, Any]] = []
    async for blob in events(source(), d, "m", keep):  # type: ignore[arg-type]
        for frame in blob.split(b"\n\n"):
            if frame:
                head, data = frame.split(b"\n")
                event = orjson.loads(data[6:])
                assert head == b"event: " + event["type"].encode()
                out.append(event)
    return out, kept


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


async def test_a_text_stream_in_openais_order() -> None:
    out, kept = await run([chunk({"role": "assistant", "content": ""}),
                           chunk({"content": "Hel"}), chunk({"content": "lo"}),
                           chunk({}, "stop"), chunk(usage=USAGE)])
    assert [e["type"] for e in out] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert out[0]["response"]["status"] == "in_progress"
    item_id = out[2]["item"]["id"]
    assert {e.get("item_id", item_id) for e in out[3:9]} == {item_id}
    assert out[6]["text"] == "Hello" and out[7]["part"]["text"] == "Hello"
    final = out[-1]["response"]
    assert final["status"] == "completed" and final["output"] == [out[8]["item"]]
    assert final["usage"]["total_tokens"] == 5
    assert kept == [orjson.dumps(final)]  # stored before response.completed went out


async def test_text_then_tool_calls_close_the_message_first() -> None:
    out, _ = await run([
        chunk({"content": "Let me check."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "g", "arguments": "{\"y\""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": ":2}"}}]}),
        chunk({}, "tool_calls")])
    kinds = [e["type"] for e in out]
    assert kinds[2:8] == ["response.output_item.added", "response.content_part.added",
                          "response.output_text.delta", "response.output_text.done",
                          "response.content_part.done", "response.output_item.done"]
    assert kinds[8:] == [
        "response.output_item.added", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    final = out[-1]["response"]
    assert [(i["type"], i.get("call_id"), i.get("arguments")) for i in final["output"]] == [
        ("message", None, None), ("function_call", "call_a", "{}"),
        ("function_call", "call_b", "{\"y\":2}")]
    assert [e["output_index"] for e in out if e["type"] == "response.output_item.done"] == [
        0, 1, 2]
    assert final["usage"] is None  # the upstream reported none


async def test_a_refusal_and_a_cut_answer() -> None:
    out, _ = await run([chunk({"refusal": "I can"}), chunk({"refusal": "not."}),
                        chunk({}, "length")])
    kinds = [e["type"] for e in out]
    assert "response.refusal.delta" in kinds and "response.refusal.done" in kinds
    final = out[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["response"]["output"][0]["content"] == [{"type": "refusal",
                                                           "refusal": "I cannot."}]


async def test_an_empty_answer_is_one_empty_message() -> None:
    out, _ = await run([chunk({}, "stop")])
    final = out[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == ""


def test_an_error_after_the_stream_began_is_response_failed() -> None:
    d = wire.Draft("resp_1", 100, parse(input="x").echo, sequence=7)
    blob = failed(d, "m", TollwayError("upstream broke", status=502))
    head, data = blob.strip().split(b"\n")
    event = orjson.loads(data[6:])
    assert head == b"event: response.failed" and event["sequence_number"] == 7
    assert event["response"]["status"] == "failed"
    assert event["response"]["error"] == {"code": "server_error", "message": "upstream broke"}
