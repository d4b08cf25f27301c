"""OpenAI's Responses API, translated onto the one chat path: a `POST /v1/responses`
body parses into the canonical `ChatRequest` (plus what only this API has: the input
items, `previous_response_id`, `store`, and the parameters the Response object repeats
back), and a chat.completion answers as a Response object (`response_object`); a
stream's chat chunks become Responses events in `responses_stream.py`.

What translates: `instructions` (a system message in front), `input` (a string or
items: `responses_items.py`), function tools and `tool_choice`, `text.format` (->
`response_format`) and `text.verbosity`, `max_output_tokens` (-> `max_tokens`),
`temperature`, `top_p`, `parallel_tool_calls`, `user`, `reasoning.effort` (->
`reasoning_effort`), `service_tier`, `prompt_cache_key`, `safety_identifier`;
`metadata`, `include`, `truncation`, `max_tool_calls` and `top_logprobs` are checked
and repeated in the Response object. `background`, `conversation` and `prompt` are 400s
naming them, as is a parameter OpenAI does not define. `store` is Tollway's own (the
response is kept in Tollway's store, never the upstream's), so it is never forwarded.

The body itself is kept too (`NativeRequest`, on the chat view) for a deployment that
speaks the Responses API natively: hosted tools (web_search, file_search, mcp, ...) and
their call items, which no chat upstream can take, are noted (`only`) rather than
refused, and refused once the route has no native deployment (`server/responses.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import msgspec
import orjson

from tollway.errors import InvalidRequest, TollwayError
from tollway.types import ChatRequest, Message, NativeRequest, StreamOptions, Usage
from tollway.wire import schemas
from tollway.wire.bounds import MAX_DEPTH, name_problem, openai_path, shortened, too_deep
from tollway.wire.expect import (
    array,
    bad_value,
    boolean,
    integer,
    missing,
    number,
    obj,
    optional,
    shown,
    string,
)
from tollway.wire.openai import parse_json_body
from tollway.wire.openai_tools import name as function_name
from tollway.wire.responses_items import (
    Input,
    Item,
    Raw,
    answer_items,
    encode_items,
    parse_input,
    resent,
    to_messages,
    typed,
)

Schemas = list[tuple[str, dict[str, Any]]]
RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

# Parameters the API defines that are taken as they are (checked, repeated back).
_ECHOED = frozenset({"include", "truncation", "max_tool_calls", "top_logprobs", "metadata"})
# Parameters that name what only OpenAI's own servers hold or do.
_UNSUPPORTED = {
    "background": "background responses are not supported on this gateway",
    "conversation": "OpenAI-hosted conversations are not supported on this gateway; "
                    "continue with previous_response_id",
    "prompt": "stored prompts live on OpenAI's servers and are not supported here",
}
_KNOWN = frozenset({
    "model", "input", "instructions", "previous_response_id", "store", "stream",
    "stream_options", "tools", "tool_choice", "text", "max_output_tokens", "temperature",
    "top_p", "parallel_tool_calls", "user", "reasoning", "service_tier",
    "prompt_cache_key", "safety_identifier", "prompt_cache_retention", *_ECHOED,
    *_UNSUPPORTED,
})
_FORWARDED = ("service_tier", "prompt_cache_key", "safety_identifier",
              "prompt_cache_retention")
# Not sent on to a native deployment: the conversation is the gateway's.
_GATEWAY_ONLY = frozenset({"previous_response_id", "store"})


@dataclass(slots=True)
class ResponsesRequest:
    chat: ChatRequest  # its messages are set by `assemble`, once the chain is loaded
    instructions: str | None
    input: Input  # this request's own input items
    items: list[Item]  # the same, those a chat upstream takes
    previous_response_id: str | None
    store: bool
    echo: dict[str, Any]  # the parameters the Response object repeats back
    body: dict[str, Any]  # as sent, for a native deployment
    only: str | None = None  # the first parameter only a native deployment serves
    kind: str = ""  # what it names (a tool's or an item's type)


@dataclass(slots=True)
class Draft:
    """One response in the making: its id, when it began, what it repeats of the
    request, and (streaming) the number of the next event."""

    id: str
    created_at: int
    echo: dict[str, Any]
    sequence: int = 0
    input_items: list[Item] = field(default_factory=list)  # every item it answers
    # The same, each as a native deployment took it (reasoning, hosted tools' items).
    native_items: list[Raw] = field(default_factory=list)
    native: bool = False  # answered by a native deployment

    def stored_items(self) -> bytes:
        if self.native:
            return orjson.dumps(self.native_items)
        return encode_items(self.input_items)


def parse_request(body: bytes) -> ResponsesRequest:
    data = parse_json_body(body)
    deep = too_deep(data)
    if deep is not None:
        raise bad_value(openai_path(shortened(deep)), f"nested more than {MAX_DEPTH} levels "
                        "deep (the limit)")
    for key in data:
        if key not in _KNOWN:
            raise InvalidRequest(f"Unrecognized request argument supplied: {key[:100]}",
                                 param=key[:100], code="unknown_parameter")
        if key in _UNSUPPORTED and data[key] not in (None, False):
            raise bad_value(key, _UNSUPPORTED[key])
    model = string(data.get("model"), "model", nonempty=True)
    if (problem := name_problem(model)) is not None:
        raise bad_value("model", problem)
    stream = bool(optional(boolean, data.get("stream"), "stream"))
    if data.get("stream_options") is not None:
        if not stream:
            raise bad_value("stream_options", "only allowed when 'stream' is true")
        obj(data["stream_options"], "stream_options")
    instructions = optional(string, data.get("instructions"), "instructions")
    previous = optional(string, data.get("previous_response_id"), "previous_response_id")
    if previous is not None and not RESPONSE_ID.fullmatch(previous):
        raise bad_value("previous_response_id", f"{shown(previous)} is not a response id")
    found: Schemas = []  # the JSON schemas, to compile
    hosted: list[tuple[str, str]] = []  # (parameter, type) only a native deployment takes
    chat_tools, echo_tools, names = _tools(data.get("tools"), found, hosted)
    choice = _tool_choice(data.get("tool_choice"), names, hosted)
    fmt, response_format, verbosity = _text(data.get("text"), found)
    max_output = optional(integer, data.get("max_output_tokens"), "max_output_tokens", 1)
    temperature = optional(number, data.get("temperature"), "temperature", 0.0, 2.0)
    top_p = optional(number, data.get("top_p"), "top_p", 0.0, 1.0)
    parallel = optional(boolean, data.get("parallel_tool_calls"), "parallel_tool_calls")
    user = optional(string, data.get("user"), "user")
    if user is not None and (problem := name_problem(user)) is not None:
        raise bad_value("user", problem)
    reasoning = _reasoning(data.get("reasoning"))
    extra: dict[str, Any] = {k: string(data[k], k) for k in _FORWARDED
                             if data.get(k) is not None}
    if reasoning.get("effort") is not None:
        extra["reasoning_effort"] = reasoning["effort"]
    if verbosity is not None:
        extra["verbosity"] = verbosity
    echoed = _echoed(data)
    items = parse_input(data.get("input"))
    if found:
        schemas.check_all(found, _invalid)
    chat = ChatRequest(
        model=model, messages=[], stream=stream, max_tokens=max_output,
        # Usage reaches the translator, which reports it in response.completed.
        stream_options=StreamOptions(include_usage=True) if stream else None,
        temperature=temperature, top_p=top_p, user=user, tools=chat_tools or None,
        tool_choice=choice[0] if choice is not None else None,
        parallel_tool_calls=parallel if chat_tools else None,
        response_format=response_format, extra=extra)
    store = optional(boolean, data.get("store"), "store")
    echo = {
        "instructions": instructions, "max_output_tokens": max_output,
        "max_tool_calls": echoed.get("max_tool_calls"),
        "parallel_tool_calls": True if parallel is None else parallel,
        "previous_response_id": previous,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": extra.get("service_tier", "auto"), "store": store is not False,
        "temperature": 1.0 if temperature is None else temperature,
        "text": {"format": fmt, "verbosity": verbosity or "medium"},
        "tool_choice": choice[1] if choice is not None else "auto", "tools": echo_tools,
        "top_logprobs": echoed.get("top_logprobs", 0),
        "top_p": 1.0 if top_p is None else top_p,
        "truncation": echoed.get("truncation", "disabled"), "user": user,
        "metadata": echoed.get("metadata", {}),
        "prompt_cache_key": extra.get("prompt_cache_key"),
        "safety_identifier": extra.get("safety_identifier"),
    }
    if items.only is not None:
        hosted.append((items.only, items.kind))
    out = ResponsesRequest(chat, instructions, items, items.items, previous,
                           store is not False, echo, data)
    if hosted:
        out.only, out.kind = hosted[0]
    return out


def assemble(req: ResponsesRequest, previous: Sequence[Item | Raw], max_messages: int,
             d: Draft | None = None) -> list[Item]:
    """The chat messages of the whole conversation — the instructions, the items of the
    response continued (its input and output, as stored) and this request's — into
    `req.chat`, and the same as a native deployment takes it into `req.chat.native`;
    returns every input item it answers (and puts them in the draft, to be stored with
    the response)."""
    raw = [i if isinstance(i, dict) else msgspec.to_builtins(i) for i in previous]
    items = [*typed(raw), *req.items]
    if d is not None:
        d.input_items = items
        d.native_items = [*raw, *req.input.stored()]
    body = {k: v for k, v in req.body.items() if k not in _GATEWAY_ONLY}
    body["input"] = [*(resent(i) for i in raw), *req.input.sent]
    body["store"] = False
    if req.body.get("reasoning") is not None:
        # Without OpenAI's storage, reasoning goes back to it encrypted.
        include = list(body.get("include") or ())
        if "reasoning.encrypted_content" not in include:
            body["include"] = [*include, "reasoning.encrypted_content"]
    req.chat.native = NativeRequest(body, req.only)
    messages = to_messages(items)
    if req.instructions is not None:
        messages.insert(0, Message(role="system", content=req.instructions))
    if not messages:
        raise bad_value("input", "empty; expected at least one item (or instructions)")
    if len(messages) > max_messages:
        param = "previous_response_id" if previous else "input"
        raise InvalidRequest(f"The conversation has {len(messages)} messages, past this "
                             f"gateway's limit of {max_messages} (server.max_messages).",
                             param=param, code="too_many_messages")
    req.chat.messages = messages
    return items


def as_sent(req: ChatRequest, changed: str) -> None:
    """The gateway changed the chat view of a Responses request (`changed`: PII
    redacted, a stored conversation put in front, the history trimmed): that view is
    what goes upstream, translated, so the caller's native body can't leak what the
    gateway took out. A request only a native deployment can serve (a hosted tool) is
    refused instead."""
    native = req.native
    if native is None:
        return
    if native.only is not None:
        raise InvalidRequest(
            f"This request needs a deployment that speaks the Responses API natively "
            f"({native.only}), but the gateway {changed}, which only the translated "
            f"request can carry. Remove {native.only}, or what made the gateway change "
            "the request.", param=native.only)
    req.native = None


def _invalid(param: str, problem: str) -> NoReturn:
    raise bad_value(param, problem)


def _tools(raw: Any, found: Schemas, hosted: list[tuple[str, str]]
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]]:
    """Function tools as chat takes them, as the Response object repeats them, and
    their names. Any other (hosted) tool is noted in `hosted`: only a native deployment
    takes it."""
    if raw is None:
        return [], [], set()
    chat: list[dict[str, Any]] = []
    echo: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, value in enumerate(array(raw, "tools")):
        where = f"tools[{i}]"
        tool = obj(value, where)
        kind = tool.get("type")
        if kind is None:
            raise missing(f"{where}.type")
        if kind != "function":
            if not isinstance(kind, str):
                raise bad_value(f"{where}.type", f"expected a string, got {shown(kind)}")
            hosted.append((f"{where}.type", kind))
            echo.append(tool)
            continue
        fn_name = function_name(tool.get("name"), f"{where}.name")
        description = optional(string, tool.get("description"), f"{where}.description")
        params = optional(obj, tool.get("parameters"), f"{where}.parameters")
        strict = optional(boolean, tool.get("strict"), f"{where}.strict")
        fn: dict[str, Any] = {"name": fn_name}
        if description is not None:
            fn["description"] = description
        if params is not None:
            fn["parameters"] = params
            found.append((f"{where}.parameters", params))
        if strict is not None:
            fn["strict"] = strict
        chat.append({"type": "function", "function": fn})
        echo.append({"type": "function", "name": fn_name, "description": description,
                     "parameters": params, "strict": strict})
        names.add(fn_name)
    return chat, echo, names


def _tool_choice(raw: Any, names: set[str], hosted: list[tuple[str, str]]
                 ) -> tuple[str | dict[str, Any] | None, Any] | None:
    """(chat's tool_choice, the Response object's); choosing a hosted tool is noted in
    `hosted` (chat's is then None)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in ("none", "auto", "required"):
            raise bad_value("tool_choice", f"expected none, auto, required or an object "
                            f"naming a function, got {shown(raw)}")
        if raw == "required" and not names and not hosted:
            raise bad_value("tool_choice", "'required' needs 'tools' to choose from")
        return raw, raw
    choice = obj(raw, "tool_choice")
    kind = choice.get("type")
    if kind is None:
        raise missing("tool_choice.type")
    if kind != "function":
        if not isinstance(kind, str):
            raise bad_value("tool_choice.type", f"expected a string, got {shown(kind)}")
        hosted.append(("tool_choice.type", kind))
        return None, choice
    wanted = string(choice.get("name"), "tool_choice.name")
    if wanted not in names:
        raise bad_value("tool_choice.name", f"no function named {shown(wanted)} in 'tools'")
    return {"type": "function", "function": {"name": wanted}}, {"type": "function",
                                                                 "name": wanted}


def _text(raw: Any, found: Schemas
          ) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """`text`: (its format as repeated back, chat's response_format, verbosity)."""
    if raw is None:
        return {"type": "text"}, None, None
    text = obj(raw, "text")
    verbosity = optional(string, text.get("verbosity"), "text.verbosity")
    if text.get("format") is None:
        return {"type": "text"}, None, verbosity
    fmt = obj(text["format"], "text.format")
    kind = fmt.get("type")
    if kind is None:
        raise missing("text.format.type")
    if kind == "text":
        return {"type": "text"}, None, verbosity
    if kind == "json_object":
        return {"type": "json_object"}, {"type": "json_object"}, verbosity
    if kind != "json_schema":
        raise bad_value("text.format.type", f"expected text, json_object or json_schema, "
                        f"got {shown(kind)}")
    spec: dict[str, Any] = {"name": function_name(fmt.get("name"), "text.format.name")}
    schema = obj(fmt.get("schema"), "text.format.schema")
    found.append(("text.format.schema", schema))
    description = optional(string, fmt.get("description"), "text.format.description")
    if description is not None:
        spec["description"] = description
    spec["schema"] = schema
    strict = optional(boolean, fmt.get("strict"), "text.format.strict")
    if strict is not None:
        spec["strict"] = strict
    return ({"type": "json_schema", **spec},
            {"type": "json_schema", "json_schema": spec}, verbosity)


def _reasoning(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    r = obj(raw, "reasoning")
    out = {}
    for key in ("effort", "summary", "generate_summary"):
        v = optional(string, r.get(key), f"reasoning.{key}")
        if v is not None:
            out[key] = v
    if "summary" not in out and "generate_summary" in out:
        out["summary"] = out["generate_summary"]
    return out


def _echoed(data: dict[str, Any]) -> dict[str, Any]:
    """The parameters taken as they are, checked."""
    out: dict[str, Any] = {}
    if data.get("include") is not None:
        for i, v in enumerate(array(data["include"], "include")):
            string(v, f"include[{i}]")
    if data.get("truncation") is not None:
        out["truncation"] = string(data["truncation"], "truncation")
        if out["truncation"] not in ("auto", "disabled"):
            raise bad_value("truncation", f"expected auto or disabled, got "
                            f"{shown(out['truncation'])}")
    if data.get("max_tool_calls") is not None:
        out["max_tool_calls"] = integer(data["max_tool_calls"], "max_tool_calls", 1)
    if data.get("top_logprobs") is not None:
        out["top_logprobs"] = integer(data["top_logprobs"], "top_logprobs", 0, 20)
    if data.get("metadata") is not None:
        meta = obj(data["metadata"], "metadata")
        if len(meta) > 16:
            raise bad_value("metadata", f"at most 16 keys, got {len(meta)}")
        for key, value in meta.items():
            if len(key) > 64:
                raise bad_value("metadata", f"keys are at most 64 characters, got {len(key)}")
            if len(string(value, f"metadata.{key}")) > 512:
                raise bad_value(f"metadata.{key}", "at most 512 characters")
        out["metadata"] = meta
    return out


# --- errors ---------------------------------------------------------------------------

# Chat parameters as the Responses API names them: an error found past parsing (an
# upstream's, a guard's) names the parameter the caller sent.
_PARAMS = {"reasoning_effort": "reasoning.effort", "max_tokens": "max_output_tokens",
           "max_completion_tokens": "max_output_tokens", "response_format": "text.format",
           "messages": "input", "verbosity": "text.verbosity"}


def error_body(err: TollwayError) -> bytes:
    """OpenAI's error shape, the parameter named as this API names it."""
    param = err.param
    if param:
        head = re.split(r"[.\[]", param, maxsplit=1)[0]
        if head in _PARAMS:
            param = _PARAMS[head] if head == "messages" else _PARAMS[head] + param[len(head):]
    body = err.body()
    body["error"]["param"] = param
    return orjson.dumps(body)


# --- the Response object ----------------------------------------------------------------


def usage_object(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": total}


def incomplete_reason(finish: str | None) -> str | None:
    """Why a chat answer that stopped for `finish` leaves the response incomplete."""
    return {"length": "max_output_tokens", "content_filter": "content_filter"}.get(
        finish or "")


def response_object(d: Draft, model: str, status: str, output: list[dict[str, Any]],
                    usage: Usage | None, *, error: dict[str, Any] | None = None,
                    incomplete: str | None = None, completed_at: int | None = None
                    ) -> dict[str, Any]:
    return {
        "id": d.id, "object": "response", "created_at": d.created_at, "status": status,
        "background": False, "completed_at": completed_at, "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": model, "output": output, "usage": usage_object(usage), **d.echo,
    }


def answered(d: Draft, body: dict[str, Any], model: str, usage: Usage | None,
             now: int) -> dict[str, Any]:
    """A chat.completion as the Response object (its first choice: Responses has no
    `n`)."""
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    reason = incomplete_reason(choice.get("finish_reason"))
    status = "incomplete" if reason else "completed"
    items = answer_items(choice.get("message") or {}, status)
    return response_object(d, model, status, [msgspec.to_builtins(i) for i in items], usage,
                           incomplete=reason, completed_at=None if reason else now)
