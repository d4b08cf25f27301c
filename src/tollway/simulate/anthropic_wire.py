"""Anthropic Messages, as api.anthropic.com speaks it.

input_tokens is counted like OpenAI's prompt_tokens (`count_request`), over the request
turned into OpenAI's shape: `system` as a system message, then each message with its
text blocks (and tool_result contents) as text and its tool_use blocks as tool calls;
`tools` as function tools and `tool_choice` mapped to OpenAI's. It is our stand-in for
Claude's tokenizer, and it is what the gateway should see reported: split, as
Anthropic does, into cache reads and writes at the `cache_control` breakpoints
(`prefix.py`) and the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec
import orjson

from tollway.accounting.tokens import count_request, message_costs
from tollway.simulate.limits import LimitView, anthropic_headers
from tollway.simulate.plan import ChoicePlan, SimRequest, ToolSpec
from tollway.simulate.prefix import Segment, has_breakpoint
from tollway.simulate.wire import (
    BadRequest,
    ErrorSpec,
    ReplyContext,
    Step,
    build_steps,
    piece_tokens,
    sse_event,
)
from tollway.types import ChatRequest, FunctionCall, Message, ToolCall

Block = dict[str, Any]


class _Message(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class _Request(msgspec.Struct, kw_only=True):
    model: str
    messages: list[_Message]
    max_tokens: int
    system: str | list[Block] | None = None
    stream: bool = False
    stop_sequences: list[str] | None = None
    tools: list[Block] | None = None
    tool_choice: Block | None = None
    output_config: Block | None = None  # structured outputs: {"format": {json_schema}}


_ERRORS = {
    401: ErrorSpec("authentication_error", "invalid x-api-key"),
    429: ErrorSpec("rate_limit_error", "This request would exceed your rate limit (simulated). "
                   "Retry after {secs}s."),
    500: ErrorSpec("api_error", "Internal server error"),
    503: ErrorSpec("overloaded_error", "Overloaded"),
}

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _blocks_text(content: str | list[Block], *, with_tool_results: bool) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for b in content:
        if b.get("type") == "text":
            parts.append(str(b.get("text", "")))
        elif with_tool_results and b.get("type") == "tool_result":
            parts.append(_blocks_text(b.get("content") or "", with_tool_results=False))
    return "".join(parts)


def _tool_calls(m: _Message) -> list[ToolCall]:
    if isinstance(m.content, str):
        return []
    return [ToolCall(str(b.get("id", "")),
                     FunctionCall(str(b.get("name", "")), orjson.dumps(b.get("input")).decode()))
            for b in m.content if b.get("type") == "tool_use"]


def _as_openai(m: _Message) -> Message:
    calls = _tool_calls(m)
    return Message(role=m.role, content=_blocks_text(m.content, with_tool_results=True),
                   tool_calls=calls or None)


def _answers_tool_result(m: _Message) -> bool:
    return isinstance(m.content, list) and any(b.get("type") == "tool_result" for b in m.content)


def _openai_tools(req: _Request) -> list[Block] | None:
    if not req.tools:
        return None
    return [{"type": "function", "function": {
        "name": t.get("name", ""), "description": t.get("description", ""),
        "parameters": t.get("input_schema") or {}}} for t in req.tools]


def _openai_tool_choice(choice: Block | None) -> str | Block | None:
    kind = (choice or {}).get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": (choice or {}).get("name", "")}}
    return {"any": "required", "none": "none", "auto": "auto"}.get(str(kind))


def _as_openai_messages(req: _Request) -> list[Message]:
    messages = [_as_openai(m) for m in req.messages]
    if req.system:
        messages.insert(0, Message(role="system", content=_blocks_text(
            req.system, with_tool_results=False)))
    return messages


def _prompt_tokens(req: _Request) -> int:
    as_openai = ChatRequest(model=req.model, messages=_as_openai_messages(req),
                            tools=_openai_tools(req),
                            tool_choice=_openai_tool_choice(req.tool_choice))
    return count_request(as_openai, req.model)


def _segments(req: _Request, prompt_tokens: int) -> tuple[Segment, ...]:
    """The prompt in Anthropic's cache order (tools, system, messages), each piece
    marked when a `cache_control` breakpoint ends it."""
    costs = message_costs(_as_openai_messages(req), req.model)
    out = [Segment(b"tools\x00" + _unmarked(req.tools), max(prompt_tokens - sum(costs), 0),
                   has_breakpoint(req.tools))]
    if req.system:
        out.append(Segment(b"system\x00" + _unmarked(req.system), costs.pop(0),
                           has_breakpoint(req.system)))
    out += [Segment(m.role.encode() + b"\x00" + _unmarked(m.content), c,
                    has_breakpoint(m.content))
            for m, c in zip(req.messages, costs, strict=True)]
    return tuple(out)


def _unmarked(content: object) -> bytes:
    """Content as the cache identifies it: a string is its one text block, and a
    breakpoint moving off a block next turn does not change the block."""
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if isinstance(content, list):
        content = [{k: v for k, v in b.items() if k != "cache_control"}
                   if isinstance(b, dict) else b for b in content]
    return orjson.dumps(content)


def _tool(req: _Request) -> ToolSpec | None:
    choice = req.tool_choice or {}
    if not req.tools or choice.get("type") == "none" or _answers_tool_result(req.messages[-1]):
        return None
    tool = req.tools[0]
    if choice.get("type") == "tool":
        tool = next((t for t in req.tools if t.get("name") == choice.get("name")), tool)
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("tools.0.name: Field required")
    return ToolSpec(name, tool.get("input_schema"))


def _json_format(config: Block | None) -> dict[str, Any]:
    """`output_config.format` (structured outputs) as the reply plan's JSON mode."""
    fmt = (config or {}).get("format") or {}
    if fmt.get("type") != "json_schema":
        return {}
    schema = fmt.get("schema")
    return {"json_mode": True, "json_schema": schema if isinstance(schema, dict) else None}


def _parse(body: Any) -> _Request:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    for field in ("model", "messages", "max_tokens"):
        if field not in body:
            raise BadRequest(f"{field}: Field required")
    try:
        req = msgspec.convert(body, _Request)
    except msgspec.ValidationError as e:
        raise BadRequest(f"Invalid request: {e}") from None
    if not req.model:
        raise BadRequest("model: String should have at least 1 character")
    if not req.messages:
        raise BadRequest("messages: at least one message is required")
    if req.max_tokens < 1:
        raise BadRequest("max_tokens: Input should be greater than or equal to 1")
    return req


# What count_tokens refuses, as the real API does ("Extra inputs are not permitted").
_NOT_COUNTED = ("max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences",
                "metadata")


def count_tokens(body: Any) -> int:
    """POST /v1/messages/count_tokens: the input tokens /v1/messages bills for the same
    request (the same count, `_prompt_tokens`)."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    for field in _NOT_COUNTED:
        if field in body:
            raise BadRequest(f"{field}: Extra inputs are not permitted")
    return _prompt_tokens(_parse({**body, "max_tokens": 1}))


class AnthropicDialect:
    endpoint = "/v1/messages"
    id_prefix = "msg_"
    request_id_header = "request-id"

    def parse(self, body: Any) -> SimRequest:
        req = _parse(body)
        key = next((_blocks_text(m.content, with_tool_results=False)
                    for m in reversed(req.messages) if m.role == "user"), "")
        prompt_tokens = _prompt_tokens(req)
        return SimRequest(
            model=req.model,
            prompt_key=key,
            prompt_tokens=prompt_tokens,
            segments=_segments(req, prompt_tokens),
            stream=req.stream,
            limit=req.max_tokens,
            stop=req.stop_sequences or [],
            tool=_tool(req),
            **_json_format(req.output_config),
        )

    def limit_headers(self, view: LimitView, wall_now: float) -> dict[str, str]:
        return anthropic_headers(view, wall_now)

    def error_spec(self, status: int, retry_after: float) -> ErrorSpec:
        spec = _ERRORS[status]
        return ErrorSpec(spec.type, spec.message.format(secs=f"{retry_after:g}"))

    def model_not_found(self, model: str) -> ErrorSpec:
        return ErrorSpec("not_found_error", f"model: {model}")

    def error_body(self, status: int, spec: ErrorSpec, request_id: str) -> bytes:
        kind = "invalid_request_error" if status == 400 else spec.type
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": spec.message},
                             "request_id": request_id})

    def reply_body(self, ctx: ReplyContext, req: SimRequest, plans: list[ChoicePlan]) -> bytes:
        p = plans[0]
        return orjson.dumps({
            "id": ctx.id,
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": [_block(p, complete=True)],
            "stop_reason": _stop_reason(p),
            "stop_sequence": p.stop_sequence,
            "usage": _usage(req, p.tokens),
        })

    def stream_steps(self, ctx: ReplyContext, req: SimRequest, plans: list[ChoicePlan],
                     ttft: float, per_token: float) -> list[Step]:
        p = plans[0]
        start = {"type": "message_start", "message": {
            "id": ctx.id, "type": "message", "role": "assistant", "model": ctx.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": _usage(req, 0)}}
        opening = (
            sse_event(b"message_start", orjson.dumps(start))
            + sse_event(b"content_block_start", orjson.dumps(
                {"type": "content_block_start", "index": 0,
                 "content_block": _block(p, complete=False)}))
            + sse_event(b"ping", b'{"type":"ping"}')
        )
        opening_tokens = p.tool_call.name_tokens if p.tool_call else 0
        delta = _delta_frame(p)
        rows = [(delta(piece), piece_tokens(p, i)) for i, piece in enumerate(p.pieces)]
        end = {"type": "message_delta",
               "delta": {"stop_reason": _stop_reason(p), "stop_sequence": p.stop_sequence},
               "usage": {"output_tokens": p.tokens}}
        closing = (
            sse_event(b"content_block_stop", b'{"type":"content_block_stop","index":0}')
            + sse_event(b"message_delta", orjson.dumps(end))
            + sse_event(b"message_stop", b'{"type":"message_stop"}')
        )
        return build_steps(opening, opening_tokens, rows, closing, ttft, per_token)


def _stop_reason(p: ChoicePlan) -> str:
    return "stop_sequence" if p.stop_sequence is not None else _STOP_REASONS[p.finish]


def _block(p: ChoicePlan, *, complete: bool) -> Block:
    if p.tool_call is None:
        return {"type": "text", "text": p.text if complete else ""}
    return {"type": "tool_use", "id": "toolu_" + p.tool_call.id_suffix, "name": p.tool_call.name,
            "input": orjson.loads(p.tool_call.arguments) if complete else {}}


def _delta_frame(p: ChoicePlan) -> Callable[[str], bytes]:
    """A function piece -> content_block_delta frame (text_delta or input_json_delta)."""
    kind, key = (b"text_delta", b"text") if p.tool_call is None else (b"input_json_delta",
                                                                      b"partial_json")
    pre = (b'{"type":"content_block_delta","index":0,"delta":{"type":"' + kind + b'","' + key
           + b'":')

    def frame(piece: str) -> bytes:
        return sse_event(b"content_block_delta", pre + orjson.dumps(piece) + b"}}")

    return frame


def _usage(req: SimRequest, output_tokens: int) -> dict[str, Any]:
    """Anthropic's input_tokens leaves out what was read from or written to the cache."""
    read, written = req.cached_tokens, req.cache_write_tokens
    return {"input_tokens": req.prompt_tokens - read - written,
            "cache_creation_input_tokens": written, "cache_read_input_tokens": read,
            "output_tokens": output_tokens, "service_tier": "standard"}
