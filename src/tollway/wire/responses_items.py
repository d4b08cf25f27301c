"""The items of a Responses API conversation, as Tollway translates them onto chat
completions: messages (input_text, input_image, input_file parts; an assistant's
output_text and refusal parts), function calls and their outputs.

An item the caller sends is checked (a 400 names `input[i]...`), given an id when it has
none, and kept in one typed form: that form is what a stored response holds and what
`input_items` lists. `reasoning` items are dropped from the chat view (model-internal:
a chat upstream could not take them back); every other item type (hosted tools' calls,
item references) only a deployment that speaks the Responses API natively can take
(`Input.only` names it). Every item is also kept as the caller sent it (`Input.sent`),
for such a deployment.

To chat messages: an assistant message and the function calls after it become one
assistant message with `tool_calls`; a function call's output becomes a `tool` message.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import orjson

from tollway.errors import TollwayError
from tollway.types import FunctionCall, Message, ToolCall
from tollway.wire.expect import (
    array,
    bad_value,
    missing,
    obj,
    optional,
    shown,
    string,
    wrong_type,
)
from tollway.wire.openai_tools import name as function_name

Role = Literal["user", "system", "developer", "assistant"]
Part = dict[str, Any]
Raw = dict[str, Any]  # an item as the Responses API writes it


def new_id(prefix: str) -> str:
    """An id as OpenAI writes them: `resp_…`, `msg_…`, `fc_…`."""
    return f"{prefix}_{secrets.token_hex(24)}"


class MessageItem(msgspec.Struct, tag_field="type", tag="message"):
    id: str
    role: Role
    content: list[Part]  # checked and normalised parts (`_input_part`, `_output_part`)
    status: str = "completed"


class FunctionCallItem(msgspec.Struct, tag_field="type", tag="function_call"):
    id: str
    call_id: str
    name: str
    arguments: str
    status: str = "completed"


class FunctionCallOutputItem(msgspec.Struct, tag_field="type", tag="function_call_output"):
    id: str
    call_id: str
    output: str | list[Part]
    status: str = "completed"


Item = MessageItem | FunctionCallItem | FunctionCallOutputItem

encode_items = msgspec.json.Encoder().encode
decode_items = msgspec.json.Decoder(list[Item]).decode


class _Output(msgspec.Struct):
    output: list[Item]


_decode_output = msgspec.json.Decoder(_Output).decode


def output_items(response: bytes) -> list[Item]:
    """A stored Response object's output items (those a continuation sends back)."""
    return _decode_output(response).output


_TYPED = frozenset({"message", "function_call", "function_call_output"})


def stored_items(input_items: bytes, response: bytes) -> list[Raw]:
    """Every item of a stored response, as stored: its input items, then its output
    (a native answer's reasoning and hosted tools' items included)."""
    found: list[Raw] = orjson.loads(input_items)
    output: list[Raw] = orjson.loads(response).get("output") or []
    return [*found, *output]


def typed(raw: list[Raw]) -> list[Item]:
    """The items a chat upstream can take (the rest are a native deployment's)."""
    return [msgspec.convert(r, Item) for r in raw if r.get("type") in _TYPED]


def resent(item: Raw) -> Raw:
    """A stored item as a native deployment takes it back: a message's or a function
    output's id is the gateway's (never stored upstream), so it goes without one."""
    if item.get("type") in ("message", "function_call_output") and "id" in item:
        return {k: v for k, v in item.items() if k != "id"}
    return item


@dataclass(slots=True)
class Input:
    """`input`, parsed: every item in order (typed, or as sent for those a chat
    upstream cannot take), each as the caller sent it, and the first that only a
    native deployment takes."""

    every: list[Item | Raw]
    sent: list[Raw]
    only: str | None = None
    kind: str = ""  # the type of the item `only` names

    @property
    def items(self) -> list[Item]:
        return [i for i in self.every if not isinstance(i, dict)]

    def stored(self) -> list[Raw]:
        return [i if isinstance(i, dict) else msgspec.to_builtins(i) for i in self.every]


# --- checking what the caller sent ------------------------------------------------------

_ROLES = ("user", "system", "developer", "assistant")
_INPUT_PARTS = ("input_text", "input_image", "input_file")


def parse_input(raw: Any) -> Input:
    """`input`: a string (one user message) or an array of items."""
    if isinstance(raw, str):
        return Input([MessageItem(new_id("msg"), "user", [{"type": "input_text",
                                                           "text": raw}])],
                     [{"type": "message", "role": "user", "content": raw}])
    if raw is None:
        raise missing("input")
    if not isinstance(raw, list):
        raise wrong_type("input", "a string or an array of items", raw)
    out = Input([], [])
    for i, value in enumerate(raw):
        where = f"input[{i}]"
        item = _item(value, where)
        out.sent.append(value)
        if item is None:  # reasoning, or a hosted tool's item: as sent
            out.every.append(value)
            if out.only is None and value.get("type") != "reasoning":
                out.only, out.kind = f"{where}.type", value["type"]
        else:
            out.every.append(item)
    return out


def _item(value: Any, where: str) -> Item | None:
    o = obj(value, where)
    kind = o.get("type", "message" if "role" in o else None)  # an "easy" message has none
    if kind is None:
        raise missing(f"{where}.type")
    item_id = optional(string, o.get("id"), f"{where}.id")
    if kind == "message":
        return _message(o, where, item_id)
    if kind == "function_call":
        return FunctionCallItem(
            item_id or new_id("fc"),
            string(o.get("call_id"), f"{where}.call_id", nonempty=True),
            function_name(o.get("name"), f"{where}.name"),
            string(o.get("arguments"), f"{where}.arguments"))
    if kind == "function_call_output":
        call_id = string(o.get("call_id"), f"{where}.call_id", nonempty=True)
        output = o.get("output")
        if not isinstance(output, str):
            parts = array(output, f"{where}.output")
            output = [_input_part(p, f"{where}.output[{j}]") for j, p in enumerate(parts)]
        return FunctionCallOutputItem(item_id or new_id("fco"), call_id, output)
    if not isinstance(kind, str):
        raise wrong_type(f"{where}.type", "a string", kind)
    return None  # reasoning or a hosted tool's: see the module's docstring


def native_only(param: str, kind: str) -> TollwayError:
    """A 400 for what only a native deployment serves, on a route with none."""
    native = "a deployment that speaks the Responses API natively (responses: native)"
    if param.startswith("input"):
        return bad_value(param, f"{shown(kind)} items are not supported by this model's "
                         "deployments, which take chat completions (messages, function_call "
                         f"and function_call_output items); {native} takes them")
    if param.startswith("tool_choice"):
        return bad_value(param, f"expected 'function', got {shown(kind)}: function tools "
                         f"only (hosted tools need {native})")
    return bad_value(param, f"{shown(kind)} is a hosted tool, which this model's deployments "
                     f"(chat completions) cannot take; only 'function' tools, unless {native}")


def _message(o: dict[str, Any], where: str, item_id: str | None) -> MessageItem:
    role = o.get("role")
    if role is None:
        raise missing(f"{where}.role")
    if role not in _ROLES:
        raise bad_value(f"{where}.role", f"expected one of {', '.join(_ROLES)}, got "
                        f"{shown(role)}")
    content = o.get("content")
    if content is None:
        raise missing(f"{where}.content")
    if isinstance(content, str):
        parts = [_text(role, content)]
    elif isinstance(content, list):
        if role == "assistant":
            parts = [_output_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]
        else:
            parts = [_input_part(p, f"{where}.content[{j}]", text_only=role != "user")
                     for j, p in enumerate(content)]
    else:
        raise wrong_type(f"{where}.content", "a string or an array of content parts", content)
    return MessageItem(item_id or new_id("msg"), role, parts)


def _text(role: str, text: str) -> Part:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": "input_text", "text": text}


def _input_part(value: Any, where: str, *, text_only: bool = False) -> Part:
    p = obj(value, where)
    kind = p.get("type")
    if kind is None:
        raise missing(f"{where}.type")
    if kind == "input_text":
        return {"type": "input_text", "text": string(p.get("text"), f"{where}.text")}
    if text_only or kind not in _INPUT_PARTS:
        allowed = "input_text" if text_only else ", ".join(_INPUT_PARTS)
        raise bad_value(f"{where}.type", f"expected {allowed}, got {shown(kind)}")
    if kind == "input_image":
        if p.get("file_id") is not None and p.get("image_url") is None:
            raise bad_value(f"{where}.file_id", "images by file id cannot be sent on to the "
                            "model here; send image_url (a URL or a data: URL)")
        url = string(p.get("image_url"), f"{where}.image_url", nonempty=True)
        detail = optional(string, p.get("detail"), f"{where}.detail") or "auto"
        return {"type": "input_image", "image_url": url, "detail": detail}
    out: Part = {"type": "input_file"}
    for key in ("file_data", "file_id", "filename"):
        v = optional(string, p.get(key), f"{where}.{key}")
        if v is not None:
            out[key] = v
    if p.get("file_url") is not None:
        raise bad_value(f"{where}.file_url", "files by URL cannot be sent on to the model "
                        "here; send file_data (a data: URL)")
    if "file_data" not in out and "file_id" not in out:
        raise missing(f"{where}.file_data")
    return out


def _output_part(value: Any, where: str) -> Part:
    p = obj(value, where)
    kind = p.get("type")
    if kind is None:
        raise missing(f"{where}.type")
    if kind in ("output_text", "input_text"):  # an assistant's text, either way
        optional(array, p.get("annotations"), f"{where}.annotations")
        return _text("assistant", string(p.get("text"), f"{where}.text"))
    if kind == "refusal":
        return {"type": "refusal", "refusal": string(p.get("refusal"), f"{where}.refusal")}
    raise bad_value(f"{where}.type", f"an assistant message holds output_text or refusal "
                    f"parts, not {shown(kind)}")


# --- to chat messages -------------------------------------------------------------------


def to_messages(items: list[Item]) -> list[Message]:
    out: list[Message] = []
    for item in items:
        if isinstance(item, MessageItem):
            out.append(_assistant(item.content) if item.role == "assistant"
                       else Message(role=item.role, content=_chat_content(item.content)))
        elif isinstance(item, FunctionCallItem):
            call = ToolCall(id=item.call_id, function=FunctionCall(name=item.name,
                                                                   arguments=item.arguments))
            last = out[-1] if out else None
            if last is not None and last.role == "assistant":
                last.tool_calls = [*(last.tool_calls or ()), call]
            else:
                out.append(Message(role="assistant", tool_calls=[call]))
        else:
            out.append(Message(role="tool", tool_call_id=item.call_id,
                               content=_chat_content(item.output)))
    return out


def _assistant(parts: list[Part]) -> Message:
    text = "".join(p["text"] for p in parts if p["type"] == "output_text")
    refusal = "".join(p["refusal"] for p in parts if p["type"] == "refusal")
    return Message(role="assistant", content=text if text or not refusal else None,
                   refusal=refusal or None)


def _chat_content(content: str | list[Part]) -> str | list[Part]:
    if isinstance(content, str):
        return content
    if all(p["type"] == "input_text" for p in content):
        return "".join(p["text"] for p in content)
    out: list[Part] = []
    for p in content:
        if p["type"] == "input_text":
            out.append({"type": "text", "text": p["text"]})
        elif p["type"] == "input_image":
            out.append({"type": "image_url",
                        "image_url": {"url": p["image_url"], "detail": p["detail"]}})
        else:
            out.append({"type": "file", "file": {k: v for k, v in p.items() if k != "type"}})
    return out


# --- from a chat answer -----------------------------------------------------------------


def output_text(text: str) -> Part:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def answer_items(message: dict[str, Any], status: str) -> list[Item]:
    """A chat.completion's message as output items: its text (or refusal) as one
    assistant message, then each tool call as a function_call item."""
    content, refusal = message.get("content"), message.get("refusal")
    calls = message.get("tool_calls") or []
    if isinstance(content, list):  # some upstreams answer in parts
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    items: list[Item] = []
    if content or refusal or not calls:
        parts = [output_text(content or "")] if content or not refusal else []
        if refusal:
            parts.append({"type": "refusal", "refusal": refusal})
        items.append(MessageItem(new_id("msg"), "assistant", parts, status))
    for call in calls:
        fn = call.get("function") or {}
        items.append(FunctionCallItem(new_id("fc"), call.get("id") or new_id("call"),
                                      fn.get("name") or "", fn.get("arguments") or "",
                                      status))
    return items
