import orjson
import pytest

from tollway.errors import InvalidRequest
from tollway.wire.openai import parse_chat_request, upstream_body


def body(**kw: object) -> bytes:
    base: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    base.update(kw)
    return orjson.dumps(base)


def test_unknown_fields_are_kept_and_forwarded() -> None:
    req = parse_chat_request(body(logprobs=True, reasoning_effort="low"))
    assert req.extra == {"logprobs": True, "reasoning_effort": "low"}
    up = upstream_body(req, "real-model")
    assert up["model"] == "real-model" and up["reasoning_effort"] == "low"
    assert "extra" not in up


def test_stream_always_requests_usage_upstream() -> None:
    up = upstream_body(parse_chat_request(body(stream=True)), "m")
    assert up["stream_options"] == {"include_usage": True}


def test_tools_and_tool_messages_round_trip() -> None:
    msgs = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    tools = [{"type": "function", "function": {"name": "w", "parameters": {}}}]
    req = parse_chat_request(body(messages=msgs, tools=tools, tool_choice="auto", seed=3))
    up = upstream_body(req, "m")
    assert up["messages"][1]["tool_calls"][0]["function"]["name"] == "w"
    assert up["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert up["tools"] == tools and up["seed"] == 3


@pytest.mark.parametrize(
    ("raw", "fragment", "param"),
    [
        (b"{not json", "not valid JSON", None),
        (b"[1]", "must be a JSON object", None),
        (b"", "empty", None),
        (orjson.dumps({"messages": [{"role": "user", "content": "x"}]}),
         "Missing required parameter: 'model'", "model"),
        (orjson.dumps({"model": "m"}), "Missing required parameter: 'messages'", "messages"),
        (body(messages=[]), "at least one message", "messages"),
        (body(messages=[{"role": "wizard", "content": "x"}]), "Invalid enum value 'wizard'",
         "messages[0].role"),
        (body(messages=[{"content": "x"}]), "'messages[0].role'", "messages[0].role"),
        (body(messages="hi"), "Expected `array`, got `str`", "messages"),
        (body(temperature="hot"), "Expected `float | null`, got `str`", "temperature"),
        (body(n=0), "'n' must be between 1 and 8", "n"),
        (body(n=9), "'n' must be between 1 and 8", "n"),
        (body(max_tokens=0), "'max_tokens' must be at least 1", "max_tokens"),
        (body(temperature=3), "'temperature' must be between 0 and 2", "temperature"),
        (body(stream_options={"include_usage": True}), "only allowed when 'stream'",
         "stream_options"),
        (body(messages=[{"role": "tool", "content": "x"}]), "needs 'tool_call_id'",
         "messages[0].tool_call_id"),
        (body(model=""), "'model' must be a non-empty string", "model"),
    ],
)
def test_bad_requests_name_the_problem(raw: bytes, fragment: str, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(raw)
    assert fragment in e.value.message
    assert e.value.param == param
    assert e.value.status == 400


def test_message_count_limit() -> None:
    msgs = [{"role": "user", "content": "x"}] * 5
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(body(messages=msgs), max_messages=4)
    assert e.value.message == "Too many messages: 5 (limit: 4)."
    assert len(parse_chat_request(body(messages=msgs), max_messages=5).messages) == 5
