"""Guards on what comes back: the schema a request asked for, the PII placeholders to
put back, and the output PII check. Works on the canonical reply shapes."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson

from tollway.guards import pii
from tollway.guards import schema as schema_check
from tollway.types import FrameStream


def reply_texts(body: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """Each choice's message and its text content."""
    out = []
    for choice in body.get("choices") or ():
        message = choice.get("message") or {}
        content = message.get("content")
        out.append((message, content if isinstance(content, str) else None))
    return out


def schema_error(body: dict[str, Any], response_format: dict[str, Any]) -> str | None:
    """What is wrong with a reply asked for as JSON (None: every choice is right). A
    choice that calls tools instead of answering is not checked."""
    choices = body.get("choices") or ()
    for i, (message, text) in enumerate(reply_texts(body)):
        if text is None and message.get("tool_calls"):
            continue
        result = schema_check.check(text or "", response_format)
        if not result.ok:
            if choices[i].get("finish_reason") == "length":
                # Not the JSON's fault: the answer was stopped before it was finished.
                return (f"choices[{i}]: the output was cut off by max_tokens (finish_reason "
                        f"'length') before it was complete; allow more max_tokens or ask "
                        f"for less ({result.error})")
            return f"choices[{i}]: {result.error}"
    return None


def truncated(body: dict[str, Any]) -> bool:
    """Whether a choice was stopped by max_tokens."""
    return any(c.get("finish_reason") == "length" for c in body.get("choices") or ())


def restore_body(body: dict[str, Any], mapping: dict[str, str]) -> None:
    for message, text in reply_texts(body):
        if text:
            message["content"] = pii.restore(text, mapping)


async def restore_frames(frames: FrameStream, mapping: dict[str, str]) -> FrameStream:
    """Put the originals back into a stream's content deltas; a placeholder split over
    two events is held back until it is whole."""
    restorers: dict[int, pii.StreamRestorer] = {}
    async for blob in frames:
        out: list[bytes] = []
        for event in blob.split(b"\n\n"):
            if not event.startswith(b"data: ") or b'"content"' not in event:
                if event:
                    out.append(event + b"\n\n")
                continue
            chunk = orjson.loads(event[6:])
            for choice in chunk.get("choices") or ():
                r = restorers.setdefault(choice.get("index", 0), pii.StreamRestorer(mapping))
                delta = choice.get("delta") or {}
                if isinstance(delta.get("content"), str):
                    delta["content"] = r.feed(delta["content"])
                if choice.get("finish_reason"):
                    delta["content"] = delta.get("content", "") + r.flush()
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        yield b"".join(out)


async def read_all(frames: AsyncGenerator[bytes, None]) -> list[bytes]:
    """Read a stream to its end (a reply that must be checked whole before it is sent)."""
    return [blob async for blob in frames]
