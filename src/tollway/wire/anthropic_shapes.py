"""Translation tables shared by the Anthropic provider (canonical -> Anthropic upstream)
and the inbound Anthropic wire format (Anthropic client -> canonical), so each mapping
is written once and both directions agree.

Two OpenAI-shape extensions travel through the canonical types, both with precedent:
- `choices[0].stop_reason`: the matched stop string (vLLM does the same), so an
  Anthropic client still learns `stop_sequence`.
- `usage.prompt_tokens_details.cache_write_tokens`: prompt-cache writes (OpenRouter's
  name), so Anthropic's `cache_creation_input_tokens` survives the round trip.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from tollway.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    TollwayError,
    Unauthorized,
    Unavailable,
    UpstreamTimeout,
)

# Anthropic stop_reason -> OpenAI finish_reason.
FINISH_REASON: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# OpenAI finish_reason -> Anthropic stop_reason.
STOP_REASON: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASON.get(stop_reason or "", "stop")


def stop_reason(finish: str | None, matched: Any = None) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an OpenAI finish_reason and the matched stop
    string some upstreams report in `choices[0].stop_reason`."""
    if finish == "stop" and isinstance(matched, str) and matched:
        return "stop_sequence", matched
    return STOP_REASON.get(finish or "", "end_turn"), None


# --- usage -----------------------------------------------------------------------------


def usage_to_openai(u: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage. Anthropic's input_tokens excludes cache reads and
    writes; OpenAI's prompt_tokens is the whole prompt, so they are added back."""
    read = int(u.get("cache_read_input_tokens") or 0)
    write = int(u.get("cache_creation_input_tokens") or 0)
    prompt = int(u.get("input_tokens") or 0) + read + write
    completion = int(u.get("output_tokens") or 0)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    if read or write:
        details: dict[str, int] = {"cached_tokens": read}
        if write:
            details["cache_write_tokens"] = write
        out["prompt_tokens_details"] = details
    return out


def usage_to_anthropic(u: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI usage -> Anthropic usage (the inverse of `usage_to_openai`)."""
    u = u or {}
    details = u.get("prompt_tokens_details") or {}
    read = int(details.get("cached_tokens") or 0)
    write = int(details.get("cache_write_tokens") or 0)
    out: dict[str, Any] = {
        "input_tokens": max(0, int(u.get("prompt_tokens") or 0) - read - write),
        "output_tokens": int(u.get("completion_tokens") or 0),
        "cache_read_input_tokens": read,
    }
    if write:
        out["cache_creation_input_tokens"] = write
    return out


# --- tools -----------------------------------------------------------------------------


def tool_to_anthropic(tool: dict[str, Any], path: str) -> dict[str, Any]:
    """An OpenAI function tool -> an Anthropic custom tool."""
    fn = tool.get("function")
    if tool.get("type", "function") != "function" or not isinstance(fn, dict):
        raise InvalidRequest(f"{path}: only function tools can be sent to an Anthropic model "
                             f"(got type {tool.get('type')!r}).", param=path)
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{path}.function.name: a tool needs a name.",
                             param=f"{path}.function.name")
    out: dict[str, Any] = {"name": name,
                           "input_schema": fn.get("parameters") or {"type": "object",
                                                                    "properties": {}}}
    if fn.get("description"):
        out["description"] = fn["description"]
    if "cache_control" in tool:
        out["cache_control"] = tool["cache_control"]
    return out


def tool_to_openai(tool: dict[str, Any]) -> dict[str, Any]:
    """An (already validated) Anthropic custom tool -> an OpenAI function tool."""
    fn: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        fn["description"] = tool["description"]
    out: dict[str, Any] = {"type": "function", "function": fn}
    if "cache_control" in tool:
        out["cache_control"] = tool["cache_control"]
    return out


def tool_choice_to_anthropic(choice: str | dict[str, Any] | None,
                             parallel: bool | None) -> dict[str, Any] | None:
    """OpenAI tool_choice (+ parallel_tool_calls) -> Anthropic tool_choice."""
    out: dict[str, Any]
    if choice is None or choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}  # takes no disable_parallel_tool_use
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"),
                                                 str):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise InvalidRequest("tool_choice: expected 'auto', 'none', 'required' or "
                             "{\"type\": \"function\", \"function\": {\"name\": ...}}, "
                             f"got {choice!r}.", param="tool_choice")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # nothing to say beyond Anthropic's default
    return out


def tool_choice_to_openai(choice: dict[str, Any]) -> tuple[str | dict[str, Any], bool | None]:
    """An (already validated) Anthropic tool_choice -> (tool_choice, parallel_tool_calls)."""
    kind = choice["type"]
    out: str | dict[str, Any]
    if kind == "tool":
        out = {"type": "function", "function": {"name": choice["name"]}}
    else:
        out = {"auto": "auto", "any": "required", "none": "none"}[kind]
    return out, (False if choice.get("disable_parallel_tool_use") else None)


def tool_arguments(raw: str | None) -> dict[str, Any]:
    """Tool call arguments (a JSON string) as the object Anthropic's `input` must be.
    Broken JSON (small local models emit it) is kept rather than lost."""
    if not raw or not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"_raw_arguments": raw}
    return value if isinstance(value, dict) else {"_raw_arguments": raw}


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# --- images and documents ----------------------------------------------------------------


def split_data_url(url: str) -> tuple[str, str] | None:
    """(media_type, base64 data) of a `data:<type>;base64,<data>` URL, else None."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    return head[: -len(";base64")], data


def source_to_url(source: dict[str, Any]) -> str:
    """An (already validated) Anthropic base64/url source -> a URL (data: for base64)."""
    if source["type"] == "url":
        return str(source["url"])
    return f"data:{source['media_type']};base64,{source['data']}"


def url_to_source(url: str, path: str) -> dict[str, Any]:
    data = split_data_url(url)
    if data is not None:
        return {"type": "base64", "media_type": data[0], "data": data[1]}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise InvalidRequest(f"{path}: expected an http(s) URL or a base64 data: URL.", param=path)


# --- errors ----------------------------------------------------------------------------


def error_type(err: TollwayError) -> str:
    """The Anthropic error `type` a client SDK expects for this error."""
    if isinstance(err, Unauthorized) or err.status == 401:
        return "authentication_error"
    if err.status == 403:
        return "permission_error"
    if isinstance(err, NotFound) or err.status == 404:
        return "not_found_error"
    if isinstance(err, PayloadTooLarge) or err.status == 413:
        return "request_too_large"
    if isinstance(err, RateLimited) or err.status == 429:
        return "rate_limit_error"
    if isinstance(err, UpstreamTimeout) or err.status == 504:
        return "timeout_error"
    if isinstance(err, Unavailable) or err.status in (503, 529):
        return "overloaded_error"
    if isinstance(err, InvalidRequest) or 400 <= err.status < 500:
        return "invalid_request_error"
    return "api_error"


def message_id(openai_id: Any) -> str:
    """An Anthropic-style message id, reusing the upstream id where there is one."""
    if isinstance(openai_id, str) and openai_id:
        if openai_id.startswith("msg_"):
            return openai_id
        return "msg_" + openai_id.removeprefix("chatcmpl-")
    return "msg_" + uuid.uuid4().hex
