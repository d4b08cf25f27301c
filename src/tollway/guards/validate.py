"""Input validation: limits on a request's messages, checked before anything else runs.

Each failure is an `InvalidRequest` (400) whose message names the offending field, the
value, the limit and the setting that holds it, so a caller knows what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollway.errors import InvalidRequest
from tollway.types import ChatRequest

_ALL_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_ALL_PARTS = frozenset({"text", "image_url", "input_audio", "file", "refusal"})


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Limits for one alias or key; `None` means no limit. Config maps onto this as
    `guards.input.<field>`."""

    max_messages: int | None = 1000
    max_chars_per_message: int | None = 100_000
    max_chars_total: int | None = 1_000_000
    allowed_roles: frozenset[str] = _ALL_ROLES
    allowed_content_types: frozenset[str] = _ALL_PARTS


def _fail(param: str, message: str, setting: str) -> InvalidRequest:
    return InvalidRequest(f"{message} (guards.input.{setting})", param=param,
                          code="guard_input_limit")


def check(request: ChatRequest, limits: InputLimits) -> None:
    """Raise `InvalidRequest` naming the first rule `request` breaks."""
    n = len(request.messages)
    if limits.max_messages is not None and n > limits.max_messages:
        raise _fail("messages", f"messages: {n:,} messages; the limit is "
                    f"{limits.max_messages:,}", "max_messages")
    total = 0
    for i, msg in enumerate(request.messages):
        where = f"messages[{i}]"
        if msg.role not in limits.allowed_roles:
            allowed = ", ".join(sorted(limits.allowed_roles))
            raise _fail(f"{where}.role", f"{where}.role: '{msg.role}' is not allowed; allowed "
                        f"roles are {allowed}", "allowed_roles")
        chars = _chars(msg.content, where, limits)
        if limits.max_chars_per_message is not None and chars > limits.max_chars_per_message:
            raise _fail(f"{where}.content", f"{where}.content: {chars:,} characters; the limit "
                        f"per message is {limits.max_chars_per_message:,}",
                        "max_chars_per_message")
        total += chars
        if limits.max_chars_total is not None and total > limits.max_chars_total:
            raise _fail("messages", f"messages: {total:,} characters in total by "
                        f"{where}; the limit is {limits.max_chars_total:,}", "max_chars_total")


def _chars(content: str | list[dict[str, object]] | None, where: str,
           limits: InputLimits) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    chars = 0
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind not in limits.allowed_content_types:
            allowed = ", ".join(sorted(limits.allowed_content_types))
            raise _fail(f"{where}.content[{j}].type", f"{where}.content[{j}].type: '{kind}' is "
                        f"not allowed; allowed content types are {allowed}",
                        "allowed_content_types")
        text = part.get("text")
        if isinstance(text, str):
            chars += len(text)
    return chars
