"""A cached answer: what is stored, and how it is replayed.

An answer is stored as an OpenAI `chat.completion` object, whichever way it arrived
(a streamed answer is assembled from its events), with what it cost. It is replayed
as JSON, or as an SSE stream cut into word-sized chunks (the size a model streams),
so a client cannot tell a hit from a fast model except by the `x-tollway-cache`
header.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import msgspec
import orjson

from tollway.providers.http import split_events
from tollway.types import Reply, ReplyStream, Usage


class CachedAnswer(msgspec.Struct, kw_only=True):
    model: str  # the upstream model that answered
    provider: str
    body: dict[str, Any]  # an OpenAI chat.completion object
    usage: Usage | None
    cost_usd: float  # what the original call cost: each hit saves it
    expires_at: float  # checked on read, against the gateway's clock


encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder(CachedAnswer).decode


def body_of_stream(received: list[bytes], model: str) -> dict[str, Any] | None:
    """The chat.completion a finished stream amounts to; None when it did not finish
    (no finish_reason) or is not one we can replay (several choices)."""
    events, _ = split_events(b"".join(received))
    text: list[str] = []
    tools: dict[int, dict[str, Any]] = {}
    role, finish, refusal = "assistant", None, None
    first: dict[str, Any] | None = None
    for _, data in events:
        if data == b"[DONE]":
            continue
        chunk = orjson.loads(data)
        first = first or chunk
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                return None
            delta = choice.get("delta") or {}
            role = delta.get("role") or role
            if delta.get("content"):
                text.append(delta["content"])
            if delta.get("refusal"):
                refusal = (refusal or "") + delta["refusal"]
            for tc in delta.get("tool_calls") or ():
                slot = tools.setdefault(tc.get("index", 0), {
                    "id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                slot["id"] = tc.get("id") or slot["id"]
                fn = tc.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    if first is None or finish is None:
        return None
    message: dict[str, Any] = {"role": role, "content": "".join(text) if text or not tools
                               else None}
    if refusal:
        message["refusal"] = refusal
    if tools:
        message["tool_calls"] = [tools[i] for i in sorted(tools)]
    return {"id": first.get("id", ""), "object": "chat.completion",
            "created": first.get("created", 0), "model": first.get("model", model),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}]}


def _fresh(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    out["id"] = "chatcmpl-cache" + os.urandom(10).hex()
    out["created"] = int(time.time())
    return out


def replay_reply(entry: CachedAnswer) -> Reply:
    return Reply(body=_fresh(entry.body), model=entry.model, usage=entry.usage)


# Words with their trailing space: the size of a streamed token or two.
_PIECE = re.compile(r"\S+\s*|\s+")
_BATCH = 16  # events per write: word-sized events, without one socket write each


def replay_stream(entry: CachedAnswer) -> ReplyStream:
    out = ReplyStream(frames=_frames(entry, lambda: out.emit_usage), model=entry.model,
                      usage=entry.usage)
    return out


async def _frames(entry: CachedAnswer, emit_usage: Callable[[], bool]
                  ) -> AsyncGenerator[bytes, None]:
    body = _fresh(entry.body)
    head = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
            "model": body.get("model", entry.model)}

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n"

    batch: list[bytes] = []
    for choice in body.get("choices") or ():
        i, message = choice.get("index", 0), choice.get("message") or {}
        batch.append(event([{"index": i, "delta": {"role": message.get("role", "assistant"),
                                                   "content": ""}, "finish_reason": None}]))
        for piece in _PIECE.findall(message.get("content") or ""):
            batch.append(event([{"index": i, "delta": {"content": piece},
                                 "finish_reason": None}]))
            if len(batch) >= _BATCH:
                yield b"".join(batch)
                batch = []
        if message.get("refusal"):
            batch.append(event([{"index": i, "delta": {"refusal": message["refusal"]},
                                 "finish_reason": None}]))
        if message.get("tool_calls"):
            calls = [{"index": n, **tc} for n, tc in enumerate(message["tool_calls"])]
            batch.append(event([{"index": i, "delta": {"tool_calls": calls},
                                 "finish_reason": None}]))
        batch.append(event([{"index": i, "delta": {},
                             "finish_reason": choice.get("finish_reason") or "stop"}]))
    if emit_usage() and entry.usage is not None:
        batch.append(event([], usage=entry.usage.to_openai()))
    if batch:
        yield b"".join(batch)
