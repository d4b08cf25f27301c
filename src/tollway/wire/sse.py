"""Server-sent events as Tollway moves them: complete OpenAI events as bytes.

Streams travel as bytes so an OpenAI-compatible upstream's events are forwarded without
being parsed and re-encoded; what needs objects parses them here (`split_events`,
`iter_chunks`), and a finished stream is assembled into one chat.completion once
(`body_of`) for whoever needs it whole.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import orjson

from tollway.types import Answer, Chunk, ChunkStream, FrameStream, ReplyStream

SseEvent = tuple[bytes, bytes]  # (event name, data)


def split_events(buf: bytes) -> tuple[list[SseEvent], bytes]:
    """Parse the complete server-sent events in `buf` as (event, data) pairs, joining
    multi-line data fields; returns them and the incomplete remainder."""
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n")
    end = buf.rfind(b"\n\n")
    if end < 0:
        return [], buf
    out: list[SseEvent] = []
    for block in buf[:end].split(b"\n\n"):
        event, data = b"", list[bytes]()
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"event:"):
                event = line[6:].strip()
            # comments (":ping") and other fields are ignored
        if data:
            out.append((event, data[0] if len(data) == 1 else b"\n".join(data)))
    return out, buf[end + 2:]


async def no_frames() -> FrameStream:
    """Placeholder for a ReplyStream whose real generator needs the stream object."""
    return
    yield


def frame(chunk: Chunk) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def is_usage_only(chunk: Chunk) -> bool:
    return bool(chunk.get("usage")) and not chunk.get("choices")


async def encode_chunks(chunks: ChunkStream, out: ReplyStream) -> FrameStream:
    """Frames for providers that build chunk objects themselves (local, Anthropic)."""
    async with aclosing(chunks):
        async for chunk in chunks:
            if is_usage_only(chunk) and not out.emit_usage:
                continue
            blob = frame(chunk)
            out.received.append(blob)
            yield blob


async def iter_chunks(frames: FrameStream) -> ChunkStream:
    """Chunk objects back from frames, for a consumer that needs them (the Anthropic
    dialect). Closing this closes the frames, and so the upstream."""
    async with aclosing(frames):
        async for blob in frames:
            for event in blob.split(b"\n\n"):
                if event.startswith(b"data: "):
                    yield orjson.loads(event[6:])


async def then(frames: FrameStream, after: Callable[[], Awaitable[None]]) -> FrameStream:
    """`frames`, then `after()` once the last one has gone out (and only if the stream
    ended: not when it broke or the client left) — before the caller sees the end."""
    async with aclosing(frames):
        async for blob in frames:
            yield blob
    await after()


def body_of(answer: Answer) -> dict[str, Any] | None:
    """The answer as a chat.completion: the reply's, or the finished stream's
    (assembled once)."""
    if answer.reply is not None:
        return answer.reply.body
    if answer.assembled is None and answer.stream is not None:
        answer.assembled = assemble(answer.stream.received, answer.model)
    return answer.assembled


def assemble(received: list[bytes], model: str) -> dict[str, Any] | None:
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
