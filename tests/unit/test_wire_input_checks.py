"""The parse-time bounds and checks of `wire/`: nesting depth, schema compilation (with
no remote references, within a size bound), and what the OpenAI checks accept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tollway.errors import InvalidRequest
from tollway.wire import bounds, schemas
from tollway.wire.anthropic import parse_messages_request
from tollway.wire.openai import parse_chat_request

HI = [{"role": "user", "content": "hi"}]


def chat(**kw: Any) -> bytes:
    return json.dumps({"model": "m", "messages": HI, **kw}).encode()


def lists(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_depth_is_counted_from_the_body() -> None:
    assert bounds.too_deep({"a": lists(bounds.MAX_DEPTH - 1)}) is None
    path = bounds.too_deep({"a": lists(bounds.MAX_DEPTH)})
    assert path == ["a", *[0] * (bounds.MAX_DEPTH - 1)]  # to the 65th container
    assert bounds.openai_path(["tools", 0, "function", "parameters"]) == (
        "tools[0].function.parameters")
    assert bounds.anthropic_path(["tools", 0, "input_schema"]) == "tools.0.input_schema"


def test_a_too_deep_request_names_where_in_both_dialects() -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(chat(metadata={"a": lists(100)}))
    assert e.value.param == "metadata.a[0][0][0][0]"
    with pytest.raises(InvalidRequest) as e:
        parse_messages_request(json.dumps({"model": "m", "max_tokens": 5, "messages": HI,
                                           "system": lists(100)}).encode())
    assert e.value.param == "system.0.0.0.0.0"


def test_a_schema_is_compiled_once() -> None:
    schema = {"type": "object", "properties": {"zz_once": {"type": "integer"}}}
    first = schemas.compiled(schema)
    assert schemas.compiled(json.loads(json.dumps(schema))) is first


@pytest.mark.parametrize("ref", ["file:///etc/passwd", "http://127.0.0.1:1/x.json",
                                 "gopher://x/y", "other.json"])
def test_a_reference_outside_the_schema_is_never_fetched(ref: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(chat(tools=[{"type": "function", "function": {
            "name": "f", "parameters": {"$id": "http://example.com/s", "$ref": ref}}}]))
    assert "points outside the schema" in e.value.message


def test_local_references_and_newer_drafts_compile() -> None:
    req = parse_chat_request(chat(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"$schema": "https://json-schema.org/draft/2020-12/schema",
                                "$defs": {"c": {"type": "string"}},
                                "type": "object", "properties": {"c": {"$ref": "#/$defs/c"}},
                                "prefixItems": [{"type": "string"}]}}}))
    assert req.response_format is not None


def test_the_schemas_of_one_request_are_bounded_in_size() -> None:
    big = {"type": "object", "description": "d" * (schemas.MAX_SCHEMA_BYTES // 2)}
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": big}}
             for i in range(3)]
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(chat(tools=tools))
    assert e.value.param == "tools[1].function.parameters"
    assert "add up to more than" in e.value.message


def test_what_the_sdk_may_send_about_tools_is_accepted() -> None:
    custom = {"type": "custom", "custom": {"name": "grep", "format": {
        "type": "grammar", "grammar": {"definition": "start: /.+/", "syntax": "lark"}}}}
    fn = {"type": "function", "function": {"name": "get-weather_2", "strict": None}}
    parse_chat_request(chat(tools=[custom, fn], tool_choice={"type": "custom",
                                                              "custom": {"name": "grep"}}))
    parse_chat_request(chat(tools=[custom, fn], tool_choice={
        "type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
            {"type": "function", "function": {"name": "get-weather_2"}}]}}))
    parse_chat_request(chat(functions=[{"name": "f", "parameters": {"type": "object"}}],
                            function_call={"name": "f"}))
    parse_chat_request(chat(tool_choice="auto"))  # harmless without tools


@pytest.mark.parametrize(("kw", "param"), [
    ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        {"type": "function", "function": {"name": "nope"}}]}}},
     "tool_choice.allowed_tools.tools[0].function.name"),
    ({"tool_choice": {"type": ["function"]}}, "tool_choice.type"),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]},
     "messages[0].content[0].file.file_data"),
    ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].name"),
    ({"model": "m" * 300}, "model"),
])
def test_more_malformed_fields(kw: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(chat(**kw))
    assert e.value.param == param, e.value.message


def test_anthropic_schemas_are_compiled_and_names_bounded() -> None:
    base = {"model": "m", "max_tokens": 5, "messages": HI}
    with pytest.raises(InvalidRequest) as e:
        parse_messages_request(json.dumps({**base, "tools": [{"name": "f", "input_schema": {
            "type": "object", "properties": {"a": {"pattern": "("}}}}]}).encode())
    assert e.value.param == "tools.0.input_schema"
    with pytest.raises(InvalidRequest) as e:
        parse_messages_request(json.dumps({**base, "max_tokens": 2**64 - 1}).encode())
    assert e.value.param == "max_tokens"
    with pytest.raises(InvalidRequest) as e:
        parse_messages_request(json.dumps({**base, "metadata": {"user_id": "a\x00"}}).encode())
    assert e.value.param == "metadata.user_id"
