"""The messages of an OpenAI chat request, beyond their types (which msgspec checked):
content present where the role needs it, and each content part shaped as its type says
(OpenAI's API reference: a text part has `text`, an image part an `image_url` object
with a `url`, ...). A part of a type not listed here is left to the input-limits guard
(`guards.input.allowed_content_types`), which names its setting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tollway.errors import InvalidRequest
from tollway.types import Message
from tollway.wire.expect import bad_value, missing, obj, optional, shallow, string

# Roles whose messages must say something; an assistant may instead call tools, and a
# legacy function result may be null.
_NEEDS_CONTENT = frozenset({"system", "developer", "user", "tool"})


def check_messages(messages: list[Message]) -> None:
    for i, m in enumerate(messages):
        content, role = m.content, m.role
        if type(content) is str and role != "tool" and role != "function":
            continue  # the common case: nothing more to check
        where = f"messages[{i}]"
        if content is None:
            if role in _NEEDS_CONTENT:
                raise missing(f"{where}.content")
            if role == "assistant" and not (m.tool_calls or m.function_call or m.refusal):
                raise bad_value(f"{where}.content", "an assistant message needs 'content' "
                                "unless it has 'tool_calls'")
        elif isinstance(content, list):
            if not content:
                raise bad_value(f"{where}.content", "empty array; expected at least one "
                                "content part (or a string)")
            shallow(content, ["messages", i, "content"])
            for j, part in enumerate(content):
                check_part(part, f"{where}.content[{j}]")
        if role == "tool" and not m.tool_call_id:
            raise InvalidRequest(f"{where}: a 'tool' message needs 'tool_call_id'.",
                                 param=f"{where}.tool_call_id")
        if role == "function" and not m.name:
            raise missing(f"{where}.name")


def _text(part: dict[str, Any], where: str) -> None:
    string(part.get("text"), f"{where}.text")


def _image(part: dict[str, Any], where: str) -> None:
    image = obj(part.get("image_url"), f"{where}.image_url")
    string(image.get("url"), f"{where}.image_url.url", nonempty=True)
    optional(string, image.get("detail"), f"{where}.image_url.detail")


def _audio(part: dict[str, Any], where: str) -> None:
    audio = obj(part.get("input_audio"), f"{where}.input_audio")
    string(audio.get("data"), f"{where}.input_audio.data", nonempty=True)
    string(audio.get("format"), f"{where}.input_audio.format", nonempty=True)


def _file(part: dict[str, Any], where: str) -> None:
    file = obj(part.get("file"), f"{where}.file")
    for key in ("file_data", "file_id", "filename"):
        optional(string, file.get(key), f"{where}.file.{key}")
    if not file.get("file_data") and not file.get("file_id"):
        raise missing(f"{where}.file.file_data")


def _refusal(part: dict[str, Any], where: str) -> None:
    string(part.get("refusal"), f"{where}.refusal")


_PARTS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "text": _text, "image_url": _image, "input_audio": _audio, "file": _file,
    "refusal": _refusal,
}


def check_part(part: dict[str, Any], where: str) -> None:
    kind = part.get("type")
    if kind is None:
        raise missing(f"{where}.type")
    kind = string(kind, f"{where}.type")
    check = _PARTS.get(kind)
    if check is not None:
        check(part, where)
    for key in ("cache_control", "prompt_cache_breakpoint"):
        optional(obj, part.get(key), f"{where}.{key}")
