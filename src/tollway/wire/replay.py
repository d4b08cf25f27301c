"""A complete chat.completion replayed as a fresh answer: as JSON, or as an SSE stream
cut into word-sized chunks (the size a model streams). For cache hits, and for a stream
that was read whole to check it before it is sent."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import orjson

from tollway.types import Reply, ReplyStream, Usage


def _fresh(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    out["id"] = "chatcmpl-cache" + os.urandom(10).hex()
    out["created"] = int(time.time())
    return out


def reply(body: dict[str, Any], model: str, usage: Usage | None) -> Reply:
    return Reply(body=_fresh(body), model=model, usage=usage)


# Words with their trailing space: the size of a streamed token or two.
_PIECE = re.compile(r"\S+\s*|\s+")
_BATCH = 16  # events per write: word-sized events, without one socket write each


def stream(body: dict[str, Any], model: str, usage: Usage | None) -> ReplyStream:
    out = ReplyStream(frames=_frames(body, model, usage, lambda: out.emit_usage), model=model,
                      usage=usage)
    return out


async def _frames(stored: dict[str, Any], model: str, usage: Usage | None,
                  emit_usage: Callable[[], bool]) -> AsyncGenerator[bytes, None]:
    body = _fresh(stored)
    head = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
            "model": body.get("model", model)}

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
    if emit_usage() and usage is not None:
        batch.append(event([], usage=usage.to_openai()))
    if batch:
        yield b"".join(batch)
