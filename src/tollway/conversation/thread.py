"""Server-side conversations: who owns one, and how a request's new turns meet the
stored history.

A request names a conversation (`x-tollway-conversation: ID`, or the body's
`conversation`) and sends only its new turns. The conversation belongs to the calling
key's lineage (so it survives a key rotation) and, when the request names one, the
end user: every store call is addressed by that owner, so another key (or user)
using the same id reaches a different, empty conversation — it can never read,
extend or delete this one.

The turns are stored as sent, before any guard redacts them (guards run on the whole
assembled history each turn, so placeholders stay consistent); the system prompt is
the request's when it sends one, else the stored one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from tollway.conversation.history import PINNED
from tollway.errors import InvalidRequest
from tollway.store.base import ConversationInfo, StoredConversation
from tollway.types import ChatRequest, Message

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Message).decode
_decode_list = msgspec.json.Decoder(list[Message]).decode


@dataclass(slots=True)
class Thread:
    """This request's part in a server-side conversation."""

    owner: str
    id: str
    system: bytes | None  # the request's system prompt, to store (None: keep the stored)
    new: list[bytes]  # the request's turns, as sent: stored with the reply
    stored: int = 0  # turns there were before this request
    extra_tokens: int = 0  # spent on its behalf (the summariser), added to its totals
    extra_usd: float = 0.0


def check_id(value: Any, param: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidRequest(f"{param}: a conversation id is 1-128 letters, digits and . _ : "
                             f"@ - (starting with a letter or digit); got {value!r}",
                             param=param)
    return value


def id_of(req: ChatRequest, header: str | None) -> str | None:
    """The conversation the request names, if any (the body field is never forwarded)."""
    body = req.extra.pop("conversation", None) if req.extra else None
    if header is not None:
        return check_id(header, "x-tollway-conversation")
    if body is not None:
        return check_id(body, "conversation")
    return None


def start(req: ChatRequest, owner: str, conversation: str) -> Thread:
    """Take the request's own turns (before guards touch them)."""
    system = [m for m in req.messages if m.role in PINNED]
    return Thread(owner, conversation, _encode(system) if system else None,
                  [_encode(m) for m in req.messages if m.role not in PINNED])


def assemble(req: ChatRequest, thread: Thread, stored: StoredConversation | None,
             max_turns: int) -> None:
    """The stored history, then the request's turns, into `req.messages`."""
    thread.stored = len(stored.turns) if stored is not None else 0
    if thread.stored + len(thread.new) + 1 > max_turns:
        raise InvalidRequest(
            f"Conversation '{thread.id}' holds {thread.stored} messages, and this turn "
            f"would pass the limit of {max_turns} (conversations.max_turns). Start a new "
            "conversation (a new id in x-tollway-conversation) to go on.",
            param="x-tollway-conversation", code="conversation_too_long")
    if stored is None:
        return
    pinned = [m for m in req.messages if m.role in PINNED]
    if not pinned and stored.system:
        pinned = _decode_list(stored.system)
    req.messages = [*pinned, *(_decode(t) for t in stored.turns),
                    *(m for m in req.messages if m.role not in PINNED)]


def reply_turn(body: dict[str, Any] | None) -> bytes | None:
    """The assistant message of a chat.completion's first choice, to store."""
    try:
        msg = body["choices"][0]["message"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(msg, dict):
        return None
    kept = {k: msg[k] for k in ("content", "tool_calls", "function_call", "refusal")
            if msg.get(k) is not None}
    if not kept:
        kept["content"] = ""
    try:
        return _encode(msgspec.convert({"role": "assistant", **kept}, Message))
    except msgspec.ValidationError:
        return None


def view(stored: StoredConversation) -> dict[str, Any]:
    """A conversation as the API shows it."""
    info = stored.info
    return {**summary_view(info), "system": msgspec.json.decode(stored.system)
            if stored.system else [],
            "messages": [msgspec.json.decode(t) for t in stored.turns]}


def summary_view(info: ConversationInfo) -> dict[str, Any]:
    return {"id": info.id, "object": "conversation", "created_at": info.created_at,
            "updated_at": info.updated_at, "turns": info.turns, "tokens": info.tokens,
            "cost_usd": round(info.cost_usd, 12)}
