"""Anthropic Messages wire format, inbound: so the official Anthropic SDK can call
Tollway's `POST /v1/messages`.

A request is validated the way the real API does (errors name the field path, e.g.
`messages.1.content.0.source`) and parsed into the canonical `ChatRequest`; the OpenAI-
shaped answer is written back as an Anthropic message object or SSE event stream.

Decisions:
- tool_result `is_error` has no OpenAI equivalent and is dropped (the result text is
  kept); `thinking`/`redacted_thinking` blocks in past assistant turns are dropped, since
  we never enable thinking. `thinking: {"type": "enabled"}` and server tools are a 400.
- `cache_control` on text/image blocks, system blocks and tools is kept on the canonical
  content part / tool, so prompt caching still works when the upstream is Anthropic; the
  top-level `cache_control` marks the last message's last part, as Anthropic does.
- `output_config.format` (structured outputs) <-> response_format json_schema;
  `output_config.effort` is a 400. temperature/top_p/top_k are accepted (older clients
  and raw HTTP send them) although SDK 2.x no longer has them.
- input token counts are only known at the end of a stream, so `message_start` reports
  0 and the final `message_delta` carries the real (cumulative) count, which the SDK's
  accumulator applies.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, NoReturn

import orjson

from tollway.errors import InvalidRequest, TollwayError
from tollway.types import (
    ChatRequest,
    Chunk,
    FunctionCall,
    Message,
    Reply,
    StreamOptions,
    ToolCall,
)
from tollway.wire import schemas
from tollway.wire.anthropic_shapes import (
    IMAGE_TYPES,
    dumps,
    error_type,
    message_id,
    source_to_url,
    stop_reason,
    tool_arguments,
    tool_choice_to_openai,
    tool_to_openai,
    usage_to_anthropic,
)
from tollway.wire.bounds import MAX_DEPTH, anthropic_path, name_problem, shortened, too_deep
from tollway.wire.expect import INT64_MAX, json_type
from tollway.wire.openai import parse_json_body

_TOP_LEVEL = frozenset({
    "model", "max_tokens", "messages", "system", "tools", "tool_choice", "stop_sequences",
    "temperature", "top_p", "top_k", "metadata", "stream", "thinking", "service_tier",
    "output_config", "cache_control",
})
# POST /v1/messages/count_tokens: the request without what only shapes the answer.
_COUNT_TOP_LEVEL = frozenset({
    "model", "messages", "system", "tools", "tool_choice", "thinking", "output_config",
    "cache_control",
})

# --- validation helpers ----------------------------------------------------------------


def _fail(path: str, msg: str) -> NoReturn:
    raise InvalidRequest(f"{path}: {msg}", param=path)


def _str(v: Any, path: str, *, nonempty: bool = False) -> str:
    if not isinstance(v, str):
        _fail(path, f"expected a string, got {json_type(v)}.")
    if nonempty and not v:
        _fail(path, "must not be empty.")
    return v


def _obj(v: Any, path: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        _fail(path, f"expected an object, got {json_type(v)}.")
    return v


def _list(v: Any, path: str) -> list[Any]:
    if not isinstance(v, list):
        _fail(path, f"expected an array, got {json_type(v)}.")
    return v


def _name(v: Any, path: str, *, nonempty: bool = False) -> str:
    """A model or user name: the ledger records it."""
    text = _str(v, path, nonempty=nonempty)
    problem = name_problem(text)
    if problem is not None:
        _fail(path, problem + ".")
    return text


def _int(v: Any, path: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(path, f"expected an integer, got {json_type(v)}.")
    if v < minimum:
        _fail(path, f"must be at least {minimum}, got {v}.")
    if v > INT64_MAX:
        _fail(path, f"must be at most {INT64_MAX} (64 bits), got {v}.")
    return v


def _unit(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        _fail(path, f"expected a number, got {json_type(v)}.")
    if not 0 <= v <= 1:
        _fail(path, f"must be between 0 and 1, got {v}.")
    return float(v)


def _kind(block: Any, path: str) -> str:
    return _str(_obj(block, path).get("type"), f"{path}.type", nonempty=True)


def _cached(part: dict[str, Any], block: dict[str, Any], path: str) -> dict[str, Any]:
    if block.get("cache_control") is not None:
        part["cache_control"] = _obj(block["cache_control"], f"{path}.cache_control")
    return part


# --- request ---------------------------------------------------------------------------


def _text_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    return _cached({"type": "text", "text": _str(block.get("text"), f"{path}.text")}, block,
                   path)


def _source_url(block: dict[str, Any], path: str, media: frozenset[str]) -> str:
    src = _obj(block.get("source"), f"{path}.source")
    kind = _str(src.get("type"), f"{path}.source.type")
    if kind == "base64":
        mt = _str(src.get("media_type"), f"{path}.source.media_type")
        if mt not in media:
            _fail(f"{path}.source.media_type", f"expected one of {', '.join(sorted(media))}, "
                  f"got {mt!r}.")
        _str(src.get("data"), f"{path}.source.data", nonempty=True)
    elif kind == "url":
        url = _str(src.get("url"), f"{path}.source.url")
        if not url.startswith(("http://", "https://")):
            _fail(f"{path}.source.url", "expected an http(s) URL.")
    else:
        _fail(f"{path}.source.type", f"expected 'base64' or 'url', got {kind!r}.")
    return source_to_url(src)


def _media_part(block: dict[str, Any], kind: str, path: str) -> dict[str, Any]:
    if kind == "image":
        url = _source_url(block, path, IMAGE_TYPES)
        return _cached({"type": "image_url", "image_url": {"url": url}}, block, path)
    url = _source_url(block, path, frozenset({"application/pdf"}))
    if not url.startswith("data:"):
        _fail(f"{path}.source.type", "documents must be sent as base64 here.")
    return _cached({"type": "file", "file": {"file_data": url}}, block, path)


def _tool_result(block: dict[str, Any], path: str) -> Message:
    tool_id = _str(block.get("tool_use_id"), f"{path}.tool_use_id", nonempty=True)
    raw = block.get("content")
    content: str | list[dict[str, Any]]
    if raw is None:
        content = ""
    elif isinstance(raw, str):
        content = raw
    else:
        content = []
        for k, inner in enumerate(_list(raw, f"{path}.content")):
            where = f"{path}.content.{k}"
            kind = _kind(inner, where)
            if kind == "text":
                content.append(_text_part(inner, where))
            elif kind in ("image", "document"):
                content.append(_media_part(inner, kind, where))
            else:
                _fail(f"{where}.type", f"a tool result holds text, image or document blocks, "
                      f"not {kind!r}.")
    if block.get("is_error") is not None and not isinstance(block["is_error"], bool):
        _fail(f"{path}.is_error", f"expected a boolean, got {json_type(block['is_error'])}.")
    return Message(role="tool", tool_call_id=tool_id, content=content)


def _user(content: list[Any], path: str) -> list[Message]:
    """One user turn: tool results become `tool` messages (first, as OpenAI needs them
    right after the assistant's tool calls), the rest one user message."""
    tools: list[Message] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{path}.content.{j}"
        kind = _kind(block, where)
        if kind == "text":
            parts.append(_text_part(block, where))
        elif kind in ("image", "document"):
            parts.append(_media_part(block, kind, where))
        elif kind == "tool_result":
            tools.append(_tool_result(block, where))
        elif kind == "tool_use":
            _fail(f"{where}.type", "tool_use blocks belong in assistant turns.")
        else:
            _fail(f"{where}.type", f"unsupported content block type {kind!r} (supported: "
                  "text, image, document, tool_result).")
    if parts:
        tools.append(Message(role="user", content=parts))
    return tools


def _assistant(content: list[Any], path: str) -> Message | None:
    texts: list[dict[str, Any]] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(content):
        where = f"{path}.content.{j}"
        kind = _kind(block, where)
        if kind == "text":
            texts.append(_text_part(block, where))
        elif kind == "tool_use":
            calls.append(ToolCall(
                id=_str(block.get("id"), f"{where}.id", nonempty=True),
                function=FunctionCall(
                    name=_str(block.get("name"), f"{where}.name", nonempty=True),
                    arguments=dumps(_obj(block.get("input"), f"{where}.input")))))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # model-internal; never needed without `thinking` enabled
        else:
            _fail(f"{where}.type", f"unsupported block type {kind!r} in an assistant turn "
                  "(supported: text, tool_use).")
    if not texts and not calls:
        return None
    # Assistant text as one string: the widest-supported form for OpenAI-style upstreams.
    text: str | list[dict[str, Any]] | None
    if any("cache_control" in t for t in texts):
        text = texts
    else:
        text = "".join(t["text"] for t in texts) or None
    return Message(role="assistant", content=text, tool_calls=calls or None)


def _messages(raw: Any) -> list[Message]:
    items = _list(raw, "messages")
    if not items:
        _fail("messages", "must contain at least one message.")
    out: list[Message] = []
    for i, item in enumerate(items):
        path = f"messages.{i}"
        m = _obj(item, path)
        role = m.get("role")
        if role not in ("user", "assistant"):
            hint = (" Put system prompts in the top-level 'system' field."
                    if role == "system" else "")
            _fail(f"{path}.role", f"expected 'user' or 'assistant', got {role!r}.{hint}")
        content = m.get("content")
        last_assistant = role == "assistant" and i == len(items) - 1
        if isinstance(content, str):
            if not content and not last_assistant:
                _fail(f"{path}.content", "must not be empty (only a final assistant "
                      "message may be).")
            if content:
                out.append(Message(role=role, content=content))
            continue
        if not isinstance(content, list):
            _fail(f"{path}.content", "expected a string or an array of content blocks, "
                  f"got {json_type(content)}.")
        blocks = content
        if not blocks and not last_assistant:
            _fail(f"{path}.content", "must not be empty (only a final assistant message "
                  "may be).")
        if role == "user":
            out.extend(_user(blocks, path))
        else:
            msg = _assistant(blocks, path)
            if msg is not None:
                out.append(msg)
    if not out:
        _fail("messages", "must contain at least one non-empty message.")
    return out


def _system(raw: Any) -> Message | None:
    if isinstance(raw, str):
        return Message(role="system", content=raw) if raw else None
    parts = []
    for j, block in enumerate(_list(raw, "system")):
        where = f"system.{j}"
        if _kind(block, where) != "text":
            _fail(f"{where}.type", "system blocks must be text.")
        parts.append(_text_part(block, where))
    return Message(role="system", content=parts) if parts else None


def _tools(raw: Any, found: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(_list(raw, "tools")):
        path = f"tools.{i}"
        tool = _obj(item, path)
        if tool.get("type", "custom") not in ("custom", None):
            _fail(f"{path}.type", f"server tools ({tool['type']!r}) are not supported "
                  "through Tollway; define custom tools with an input_schema.")
        _str(tool.get("name"), f"{path}.name", nonempty=True)
        if tool.get("description") is not None:
            _str(tool["description"], f"{path}.description")
        schema = _obj(tool.get("input_schema"), f"{path}.input_schema")
        if schema.get("type") != "object":
            _fail(f"{path}.input_schema.type", "must be 'object'.")
        found.append((f"{path}.input_schema", schema))
        out.append(tool_to_openai(tool))
    return out


def _tool_choice(raw: Any) -> dict[str, Any]:
    choice = _obj(raw, "tool_choice")
    kind = choice.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        _fail("tool_choice.type", f"expected 'auto', 'any', 'tool' or 'none', got {kind!r}.")
    if kind == "tool":
        _str(choice.get("name"), "tool_choice.name", nonempty=True)
    dp = choice.get("disable_parallel_tool_use")
    if dp is not None and not isinstance(dp, bool):
        _fail("tool_choice.disable_parallel_tool_use", "expected a boolean.")
    return choice


def parse_messages_request(body: bytes) -> ChatRequest:
    """Validate an Anthropic Messages request and return it as a canonical ChatRequest."""
    return _parse_request(body, count=False)


def parse_count_tokens_request(body: bytes) -> ChatRequest:
    """Validate a `POST /v1/messages/count_tokens` body (a Messages request without
    max_tokens, stream or sampling parameters); the ChatRequest has no max_tokens."""
    return _parse_request(body, count=True)


def _parse_request(body: bytes, *, count: bool) -> ChatRequest:
    data = parse_json_body(body)
    deep = too_deep(data)
    if deep is not None:
        _fail(anthropic_path(shortened(deep)), f"nested more than {MAX_DEPTH} levels deep "
              "(the limit).")
    allowed, where = ((_COUNT_TOP_LEVEL, "/v1/messages/count_tokens") if count
                      else (_TOP_LEVEL, "/v1/messages"))
    for key in data:
        if key not in allowed:
            _fail(key, f"unknown or unsupported parameter (Tollway's {where} accepts: "
                  f"{', '.join(sorted(allowed - {'thinking', 'service_tier'}))}).")
    if "model" not in data:
        _fail("model", "Field required.")
    model = _name(data["model"], "model", nonempty=True)
    max_tokens: int | None = None
    if not count:
        if "max_tokens" not in data:
            _fail("max_tokens", "Field required (the Messages API needs an output limit).")
        max_tokens = _int(data["max_tokens"], "max_tokens", 1)
    if "messages" not in data:
        _fail("messages", "Field required.")
    messages = _messages(data["messages"])
    if data.get("system") is not None:
        system = _system(data["system"])
        if system is not None:
            messages.insert(0, system)
    thinking = data.get("thinking")
    if thinking is not None and _obj(thinking, "thinking").get("type") != "disabled":
        _fail("thinking", "extended thinking is not supported through Tollway; omit it.")

    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        _fail("stream", f"expected a boolean, got {json_type(stream)}.")
    req = ChatRequest(model=model, messages=messages, max_tokens=max_tokens, stream=stream)
    if stream:
        # stream_to_anthropic needs the usage chunk; the gateway strips it otherwise.
        req.stream_options = StreamOptions(include_usage=True)
    if data.get("temperature") is not None:
        req.temperature = _unit(data["temperature"], "temperature")
    if data.get("top_p") is not None:
        req.top_p = _unit(data["top_p"], "top_p")
    if data.get("top_k") is not None:
        req.extra = {"top_k": _int(data["top_k"], "top_k", 0)}
    if data.get("stop_sequences") is not None:
        stops = _list(data["stop_sequences"], "stop_sequences")
        req.stop = [_str(s, f"stop_sequences.{i}") for i, s in enumerate(stops)]
    if data.get("metadata") is not None:
        meta = _obj(data["metadata"], "metadata")
        for key in meta:
            if key != "user_id":
                _fail(f"metadata.{key}", "unknown field (metadata takes only 'user_id').")
        if meta.get("user_id") is not None:
            req.user = _name(meta["user_id"], "metadata.user_id")
    found: list[tuple[str, dict[str, Any]]] = []  # the JSON schemas, to compile
    if data.get("tools") is not None:
        req.tools = _tools(data["tools"], found) or None
    if data.get("output_config") is not None:
        req.response_format = _output_config(data["output_config"])
        if req.response_format is not None:
            found.append(("output_config.format.schema",
                          req.response_format["json_schema"]["schema"]))
    if found:
        schemas.check_all(found, _invalid_schema)
    if data.get("cache_control") is not None:
        _mark_last(req.messages, _obj(data["cache_control"], "cache_control"))
    if data.get("tool_choice") is not None:
        choice = _tool_choice(data["tool_choice"])
        if choice["type"] == "tool" and not any(
                t["function"]["name"] == choice["name"] for t in req.tools or []):
            _fail("tool_choice.name", f"no tool named {choice['name']!r} in 'tools'.")
        if choice["type"] in ("any", "tool") and not req.tools:
            _fail("tool_choice", "needs 'tools' to choose from.")
        if req.tools:  # OpenAI-style upstreams refuse a tool_choice without tools
            req.tool_choice, req.parallel_tool_calls = tool_choice_to_openai(choice)
    return req


def _invalid_schema(path: str, problem: str) -> NoReturn:
    _fail(path, problem + ".")


def _output_config(raw: Any) -> dict[str, Any] | None:
    cfg = _obj(raw, "output_config")
    for key in cfg:
        if key == "effort" and cfg[key] is not None:
            _fail("output_config.effort", "not supported through Tollway; omit it.")
        if key not in ("format", "effort"):
            _fail(f"output_config.{key}", "unknown field (supported: format).")
    if cfg.get("format") is None:
        return None
    fmt = _obj(cfg["format"], "output_config.format")
    if fmt.get("type") != "json_schema":
        _fail("output_config.format.type", f"expected 'json_schema', got {fmt.get('type')!r}.")
    schema = _obj(fmt.get("schema"), "output_config.format.schema")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def _mark_last(messages: list[Message], cache_control: dict[str, Any]) -> None:
    """Top-level cache_control: a breakpoint on the last block of the last message."""
    last = messages[-1]
    if isinstance(last.content, str) and last.content:
        last.content = [{"type": "text", "text": last.content}]
    if isinstance(last.content, list) and last.content:
        last.content[-1].setdefault("cache_control", cache_control)


# --- response --------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    return {"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or "",
            "input": tool_arguments(fn.get("arguments"))}


def reply_to_anthropic(reply: Reply) -> dict[str, Any]:
    """An OpenAI `chat.completion` (Reply.body) -> an Anthropic message object."""
    body = reply.body
    choices = body.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    # An OpenAI refusal has no content; its words are still the answer to show.
    text = _text_of(message.get("content")) or str(message.get("refusal") or "")
    calls = message.get("tool_calls") or []
    content: list[dict[str, Any]] = []
    if text or not calls:
        content.append({"type": "text", "text": text})
    content.extend(_tool_use(c) for c in calls)
    reason, sequence = stop_reason(choice.get("finish_reason"), choice.get("stop_reason"))
    usage = body.get("usage") or (reply.usage.to_openai() if reply.usage else None)
    return {"id": message_id(body.get("id")), "type": "message", "role": "assistant",
            "model": body.get("model") or reply.model, "content": content,
            "stop_reason": reason, "stop_sequence": sequence,
            "usage": usage_to_anthropic(usage)}


def _frame(event: dict[str, Any]) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class _Blocks:
    """The Anthropic content blocks of one streamed message: which is open (text or a
    tool_use), and the frames one OpenAI choice delta turns into."""

    __slots__ = ("finish", "index", "matched", "open_kind", "open_tool")

    def __init__(self) -> None:
        self.index = -1  # the current block
        self.open_kind: str | None = None  # "text" | "tool" while a block is open
        self.open_tool: tuple[int, str] | None = None  # (OpenAI index, id) of the open tool
        self.finish: str | None = None
        self.matched: Any = None  # the stop sequence matched, when a server says

    def close(self) -> list[bytes]:
        if self.open_kind is None:
            return []
        self.open_kind, self.open_tool = None, None
        return [_frame({"type": "content_block_stop", "index": self.index})]

    def _open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        frames = self.close()
        self.index += 1
        self.open_kind = kind
        frames.append(_frame({"type": "content_block_start", "index": self.index,
                              "content_block": block}))
        return frames

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _frame({"type": "content_block_delta", "index": self.index, "delta": delta})

    def choice(self, choice: dict[str, Any]) -> list[bytes]:
        delta = choice.get("delta") or {}
        frames: list[bytes] = []
        text = delta.get("content")
        if text:
            if self.open_kind != "text":
                frames += self._open("text", {"type": "text", "text": ""})
            frames.append(self._delta({"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or []:
            fn = call.get("function") or {}
            # OpenAI streams tool calls one after another; a new index (or a new id,
            # for servers that repeat it) starts the next tool_use block.
            tc_index, tc_id = call.get("index", 0), call.get("id") or ""
            tool = self.open_tool
            if self.open_kind != "tool" or tool is None or tc_index != tool[0] \
                    or tc_id not in ("", tool[1]):
                frames += self._open("tool", {"type": "tool_use", "id": tc_id,
                                              "name": fn.get("name") or "", "input": {}})
                self.open_tool = (tc_index, tc_id)
            if fn.get("arguments"):
                frames.append(self._delta({"type": "input_json_delta",
                                           "partial_json": fn["arguments"]}))
        if choice.get("finish_reason"):
            self.finish, self.matched = choice["finish_reason"], choice.get("stop_reason")
            frames += self.close()
        return frames


def _message_start(msg_id: str, model: str, input_tokens: int) -> bytes:
    return _frame({"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 0}}})


async def stream_to_anthropic(chunks: AsyncIterator[Chunk], model: str,
                             input_tokens: int = 0) -> AsyncGenerator[bytes, None]:
    """OpenAI chunks (ending with a usage-only chunk) -> Anthropic SSE frames, in the
    order the Messages API sends them; `message_start` carries the prompt's tokens, as
    Anthropic's does (the final usage follows in `message_delta`). An error from
    `chunks` after the response has started becomes an `error` event, which is how
    Anthropic reports mid-stream failures."""
    started = False
    blocks = _Blocks()
    usage: dict[str, Any] | None = None
    try:
        async for chunk in chunks:
            if not started:
                started = True
                yield _message_start(message_id(chunk.get("id")), model, input_tokens)
            if chunk.get("usage"):
                usage = chunk["usage"]
            frames = [f for choice in chunk.get("choices") or []
                      if choice.get("index", 0) == 0 for f in blocks.choice(choice)]
            if frames:
                yield b"".join(frames)  # one write per upstream chunk
    except TollwayError as e:
        yield error_frame(e)
        return
    if not started:
        yield _message_start(message_id(None), model, input_tokens)
    for f in blocks.close():
        yield f
    reason, sequence = stop_reason(blocks.finish, blocks.matched)
    yield _frame({"type": "message_delta",
                  "delta": {"stop_reason": reason, "stop_sequence": sequence},
                  "usage": usage_to_anthropic(usage)})
    yield _frame({"type": "message_stop"})


def error_frame(err: TollwayError) -> bytes:
    """The `error` event Anthropic sends when a stream fails after it began."""
    return b"event: error\ndata: " + error_body(err) + b"\n\n"


def error_body(err: TollwayError) -> bytes:
    """An Anthropic error object for `err` (the HTTP status stays `err.status`)."""
    return orjson.dumps({"type": "error",
                         "error": {"type": error_type(err), "message": err.message}})
