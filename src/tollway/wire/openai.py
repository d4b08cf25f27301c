"""OpenAI chat-completions wire format: parse requests, write JSON and SSE frames."""

from __future__ import annotations

import re
from typing import Any, NoReturn

import msgspec
import orjson

from tollway.errors import InvalidRequest
from tollway.types import ChatRequest, Chunk
from tollway.wire import schemas
from tollway.wire.expect import bad_value, shallow
from tollway.wire.openai_messages import check_messages
from tollway.wire.openai_params import check_extra, check_response_format, check_scalars
from tollway.wire.openai_tools import check_functions, check_tool_choice, check_tools

_KNOWN = frozenset(f for f in ChatRequest.__struct_fields__ if f != "extra")
_AT = re.compile(r" - at `\$\.?(.*)`$")


def parse_json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidRequest("Request body is empty; expected a JSON object.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"Request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"Request body must be a JSON object, got {type(data).__name__}.")
    return data


def _validation_error(e: msgspec.ValidationError) -> InvalidRequest:
    msg = str(e)
    m = _AT.search(msg)
    param = m.group(1) if m else None
    what = msg[: m.start()] if m else msg
    if what.startswith("Object missing required field"):
        field = what.split("`")[1] if "`" in what else "?"
        full = f"{param}.{field}" if param else field
        return InvalidRequest(f"Missing required parameter: '{full}'.", param=full,
                              code="missing_required_parameter")
    if what.startswith("Invalid enum value") and param and param.endswith(".role"):
        what += " (expected one of: system, developer, user, assistant, tool, function)"
    return InvalidRequest(f"Invalid value for '{param}': {what}." if param else what + ".",
                          param=param, code="invalid_value")


def parse_chat_request(body: bytes, *, max_n: int = 8, max_messages: int = 2048) -> ChatRequest:
    data = parse_json_body(body)
    extra = {k: data.pop(k) for k in [k for k in data if k not in _KNOWN]}
    try:
        req = msgspec.convert(data, ChatRequest)
    except msgspec.ValidationError as e:
        raise _validation_error(e) from None
    req.extra = extra
    _check(req, max_n, max_messages)
    return req


def _check(req: ChatRequest, max_n: int, max_messages: int) -> None:
    if not req.model:
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    if not req.messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages",
                             code="empty_array")
    if len(req.messages) > max_messages:
        raise InvalidRequest(f"Too many messages: {len(req.messages)} (limit: {max_messages}).",
                             param="messages", code="too_many_messages")
    if req.n is not None and not 1 <= req.n <= max_n:
        raise InvalidRequest(f"'n' must be between 1 and {max_n}, got {req.n}.", param="n",
                             code="invalid_value")
    for name in ("max_tokens", "max_completion_tokens"):
        v = getattr(req, name)
        if v is not None and v < 1:
            raise InvalidRequest(f"'{name}' must be at least 1, got {v}.", param=name,
                                 code="invalid_value")
    if req.temperature is not None and not 0 <= req.temperature <= 2:
        raise InvalidRequest(f"'temperature' must be between 0 and 2, got {req.temperature}.",
                             param="temperature", code="invalid_value")
    if req.top_p is not None and not 0 <= req.top_p <= 1:
        raise InvalidRequest(f"'top_p' must be between 0 and 1, got {req.top_p}.",
                             param="top_p", code="invalid_value")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.",
                             param="stream_options", code="invalid_value")
    check_scalars(req)
    check_messages(req.messages)
    if req.tools or req.tool_choice is not None or req.response_format is not None or (
            req.extra):  # most requests have none of these
        _check_options(req)


def _check_options(req: ChatRequest) -> None:
    # First: what follows recurses (orjson stops at 255 levels). The rest of the request
    # has types that bound its depth; content parts are checked with the messages.
    for name, value in (("tools", req.tools), ("tool_choice", req.tool_choice),
                        ("response_format", req.response_format), *req.extra.items()):
        shallow(value, [name])
    found: list[tuple[str, dict[str, Any]]] = []  # the JSON schemas, to compile
    defined = check_tools(req.tools or [], found)
    if req.tool_choice is not None:
        check_tool_choice(req.tool_choice, defined)
    if req.response_format is not None:
        check_response_format(req.response_format, found)
    if req.extra:
        check_functions(req.extra, found)
        check_extra(req.extra)
    if found:
        schemas.check_all(found, _invalid)


def _invalid(param: str, problem: str) -> NoReturn:
    raise bad_value(param, problem)


def upstream_body(req: ChatRequest, model: str) -> dict[str, Any]:
    """The request as an OpenAI-compatible upstream should receive it."""
    out: dict[str, Any] = msgspec.to_builtins(req)
    out.pop("extra", None)
    out.update(req.extra)
    out["model"] = model
    if req.stream:
        # Always ask for usage: it is what we bill on. The client only sees the usage
        # chunk if it asked for it (see gateway).
        opts = dict(out.get("stream_options") or {})
        opts["include_usage"] = True
        out["stream_options"] = opts
    return out


def sse_frame(chunk: Chunk) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
