"""OpenAI chat-completions, as api.openai.com speaks it."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from tollway.accounting.tokens import count_request
from tollway.simulate.limits import LimitView, openai_headers
from tollway.simulate.plan import ChoicePlan, SimRequest, ToolSpec
from tollway.simulate.prefix import chat_segments
from tollway.simulate.wire import (
    SYSTEM_FINGERPRINT,
    BadRequest,
    ErrorSpec,
    ReplyContext,
    Step,
    build_steps,
    piece_tokens,
    sse,
    token_rows,
)
from tollway.types import ChatRequest, Message

_MAX_N = 128

_ERRORS = {
    401: ErrorSpec("invalid_request_error", "Incorrect API key provided.", "invalid_api_key"),
    429: ErrorSpec("requests", "Rate limit reached for requests (simulated). "
                   "Please try again in {secs}s.", "rate_limit_exceeded"),
    500: ErrorSpec("server_error", "The server had an error while processing your request. "
                   "Sorry about that!"),
    503: ErrorSpec("server_error", "The engine is currently overloaded, please try again later.",
                   "service_unavailable"),
}


def _prompt_key(messages: list[Message]) -> str:
    for m in reversed(messages):
        if m.role == "user":
            return m.text()
    return ""


def _tool(req: ChatRequest) -> ToolSpec | None:
    """The tool to call, if the reply should be a tool call: tools offered, tool_choice
    is not "none", and we are not answering a tool result."""
    if not req.tools or req.tool_choice == "none" or req.messages[-1].role == "tool":
        return None
    fn: dict[str, Any] = req.tools[0].get("function") or {}
    if isinstance(req.tool_choice, dict):
        wanted = (req.tool_choice.get("function") or {}).get("name")
        for t in req.tools:
            if (t.get("function") or {}).get("name") == wanted:
                fn = t["function"]
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("Missing required parameter: 'tools[0].function.name'.",
                         "tools[0].function.name")
    return ToolSpec(name, fn.get("parameters"))


def _json_format(fmt: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
    """(reply is a JSON object?, its schema if one was given)."""
    kind = (fmt or {}).get("type")
    if kind == "json_schema":
        schema = ((fmt or {}).get("json_schema") or {}).get("schema")
        return True, schema if isinstance(schema, dict) else None
    return kind == "json_object", None


def _check(req: ChatRequest) -> None:
    if not req.model:
        raise BadRequest("you must provide a model parameter", "model")
    if not req.messages:
        raise BadRequest("[] is too short - 'messages'", "messages")
    if req.n is not None and not 1 <= req.n <= _MAX_N:
        raise BadRequest(f"{req.n} is not a valid value for 'n'", "n")
    for name in ("max_tokens", "max_completion_tokens"):
        v = getattr(req, name)
        if v is not None and v < 1:
            raise BadRequest(f"Invalid '{name}': integer below minimum value.", name)


class OpenAIDialect:
    endpoint = "/v1/chat/completions"
    id_prefix = "chatcmpl-"
    request_id_header = "x-request-id"

    def parse(self, body: Any) -> SimRequest:
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        for field in ("model", "messages"):
            if field not in body:
                raise BadRequest(f"Missing required parameter: '{field}'.", field)
        try:
            req = msgspec.convert(body, ChatRequest)
        except msgspec.ValidationError as e:
            raise BadRequest(f"Invalid request: {e}") from None
        _check(req)
        # Legacy function calling is not a ChatRequest field, but it is billed.
        req.extra = {k: body[k] for k in ("functions", "function_call") if k in body}
        json_mode, schema = _json_format(req.response_format)
        prompt_tokens = count_request(req, req.model)
        head = orjson.dumps([req.tools, req.tool_choice, req.extra])
        return SimRequest(
            model=req.model,
            prompt_key=_prompt_key(req.messages),
            prompt_tokens=prompt_tokens,
            segments=chat_segments(req.messages, req.model, prompt_tokens, head),
            stream=req.stream,
            n=req.n or 1,
            limit=req.output_limit(),
            stop=req.stop_list(),
            tool=_tool(req),
            json_mode=json_mode,
            json_schema=schema,
            include_usage=bool(req.stream_options and req.stream_options.include_usage),
        )

    def limit_headers(self, view: LimitView, wall_now: float) -> dict[str, str]:
        return openai_headers(view)

    def error_spec(self, status: int, retry_after: float) -> ErrorSpec:
        spec = _ERRORS[status]
        return ErrorSpec(spec.type, spec.message.format(secs=f"{retry_after:g}"), spec.code)

    def model_not_found(self, model: str) -> ErrorSpec:
        return ErrorSpec("invalid_request_error", f"The model `{model}` does not exist or "
                         "you do not have access to it.", "model_not_found")

    def error_body(self, status: int, spec: ErrorSpec, request_id: str) -> bytes:
        if status == 400:
            spec = ErrorSpec("invalid_request_error", spec.message, None, spec.param)
        return orjson.dumps({"error": {"message": spec.message, "type": spec.type,
                                       "param": spec.param, "code": spec.code}})

    def reply_body(self, ctx: ReplyContext, req: SimRequest, plans: list[ChoicePlan]) -> bytes:
        return orjson.dumps({
            "id": ctx.id,
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [{"index": i, "message": _message(p), "logprobs": None,
                         "finish_reason": p.finish} for i, p in enumerate(plans)],
            "usage": _usage(req, plans),
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        })

    def stream_steps(self, ctx: ReplyContext, req: SimRequest, plans: list[ChoicePlan],
                     ttft: float, per_token: float) -> list[Step]:
        ch = _Chunker(ctx, req.include_usage)
        opening = b"".join(ch.opening(i, p) for i, p in enumerate(plans))
        opening_tokens = sum(p.tool_call.name_tokens for p in plans if p.tool_call)
        rows: list[tuple[bytes, int]] = []
        for pos, row in enumerate(token_rows(plans)):
            data = b"".join(ch.piece(c, p, p.pieces[pos]) for c, p in row)
            rows.append((data, sum(piece_tokens(p, pos) for _, p in row)))
        closing = b"".join(ch.finish(i, p) for i, p in enumerate(plans))
        if req.include_usage:
            closing += ch.usage(_usage(req, plans))
        return build_steps(opening, opening_tokens, rows, closing + sse(b"[DONE]"), ttft,
                           per_token)


def _message(p: ChoicePlan) -> dict[str, Any]:
    if p.tool_call is None:
        return {"role": "assistant", "content": p.text, "refusal": None, "annotations": []}
    call = {"id": "call_" + p.tool_call.id_suffix, "type": "function",
            "function": {"name": p.tool_call.name, "arguments": p.tool_call.arguments}}
    return {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None,
            "annotations": []}


def _usage(req: SimRequest, plans: list[ChoicePlan]) -> dict[str, Any]:
    completion = sum(p.tokens for p in plans)
    return {
        "prompt_tokens": req.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": req.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": req.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


class _Chunker:
    """Writes `chat.completion.chunk` frames. Content chunks dominate a stream, so they
    are spliced from a fixed prefix/suffix instead of serializing a dict each time."""

    def __init__(self, ctx: ReplyContext, include_usage: bool) -> None:
        self._head = {"id": ctx.id, "object": "chat.completion.chunk", "created": ctx.created,
                      "model": ctx.model, "service_tier": "default",
                      "system_fingerprint": SYSTEM_FINGERPRINT}
        self._usage_null = include_usage
        # `{head...,"choices":[{"index":` + i + `,"delta":{"content":"..."}` + tail
        self._pre = orjson.dumps(self._head)[:-1] + b',"choices":[{"index":'
        self._post = (b',"logprobs":null,"finish_reason":null}]'
                      + (b',"usage":null}' if include_usage else b"}"))

    def _dumps(self, index: int, delta: dict[str, Any], finish: str | None) -> bytes:
        chunk = dict(self._head)
        chunk["choices"] = [{"index": index, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]
        if self._usage_null:
            chunk["usage"] = None
        return sse(orjson.dumps(chunk))

    def opening(self, index: int, p: ChoicePlan) -> bytes:
        if p.tool_call is None:
            return self._dumps(index, {"role": "assistant", "content": "", "refusal": None},
                               None)
        call = {"index": 0, "id": "call_" + p.tool_call.id_suffix, "type": "function",
                "function": {"name": p.tool_call.name, "arguments": ""}}
        return self._dumps(index, {"role": "assistant", "content": None, "tool_calls": [call],
                                   "refusal": None}, None)

    def piece(self, index: int, p: ChoicePlan, piece: str) -> bytes:
        if p.tool_call is not None:
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            return self._dumps(index, delta, None)
        return sse(self._pre + str(index).encode() + b',"delta":{"content":'
                   + orjson.dumps(piece) + b"}" + self._post)

    def finish(self, index: int, p: ChoicePlan) -> bytes:
        return self._dumps(index, {}, p.finish)

    def usage(self, usage: dict[str, Any]) -> bytes:
        chunk = dict(self._head)
        chunk["choices"] = []
        chunk["usage"] = usage
        return sse(orjson.dumps(chunk))
