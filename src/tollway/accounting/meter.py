"""The mid-stream cost ceiling: count output tokens as a stream passes and cut it
when the next event would go past what the ceiling allows.

Pre-flight already lowered max_tokens so the worst case fits; this catches what
max_tokens does not bound: an upstream that overruns it, hidden reasoning, n > 1 on
providers that ignore it. A cut stream ends with finish_reason "length", a comment
saying why, and usage billed for what was generated (the upstream's own usage never
arrives once we hang up).
"""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Any

import orjson

from tollway.accounting.tokens import count_text
from tollway.types import FrameStream, ReplyStream, Usage
from tollway.wire.sse import split_events


def output_tokens_of(data: bytes, model: str) -> int:
    """Tokens of generated text (content, tool names and arguments) in one event."""
    if b'"choices"' not in data:
        return 0
    chunk: dict[str, Any] = orjson.loads(data)
    total = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        for key in ("content", "reasoning_content", "refusal"):
            text = delta.get(key)
            if text:
                total += count_text(text, model)
        for call in delta.get("tool_calls") or ():
            fn = call.get("function") or {}
            total += count_text((fn.get("name") or "") + (fn.get("arguments") or ""), model)
    return total


class StreamMeter:
    __slots__ = ("cut", "input_tokens", "max_output", "model", "output_tokens", "stream")

    def __init__(self, stream: ReplyStream, max_output: int, input_tokens: int,
                 model: str) -> None:
        self.stream = stream
        self.max_output = max_output
        self.input_tokens = input_tokens
        self.model = model
        self.output_tokens = 0
        self.cut = False

    async def frames(self, inner: FrameStream) -> FrameStream:
        async with aclosing(inner):  # leaving early closes the upstream connection
            async for blob in inner:
                events, _ = split_events(blob)
                keep: list[bytes] = []
                for _, data in events:
                    n = output_tokens_of(data, self.model)
                    if self.output_tokens + n > self.max_output:
                        self.cut = True
                        break
                    self.output_tokens += n
                    keep += (b"data: ", data, b"\n\n")
                if keep:
                    yield b"".join(keep)
                if self.cut:
                    yield self._ending()
                    return

    def _ending(self) -> bytes:
        usage = Usage(prompt_tokens=self.input_tokens, completion_tokens=self.output_tokens,
                      total_tokens=self.input_tokens + self.output_tokens)
        self.stream.usage = usage
        base = {"id": "chatcmpl-tollway-cut", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self.stream.model}
        out = [b": tollway: stream cut at the per-request cost ceiling\n\n",
               b"data: " + orjson.dumps({**base, "choices": [
                   {"index": 0, "delta": {}, "finish_reason": "length"}]}) + b"\n\n"]
        if self.stream.emit_usage:
            out.append(b"data: " + orjson.dumps({**base, "choices": [],
                                                 "usage": usage.to_openai()}) + b"\n\n")
        return b"".join(out)


def received_output_tokens(received: list[bytes], model: str) -> int:
    """Tokens of generated text in what a stream forwarded (billing one that ended
    without usage: the client left, the stream broke)."""
    events, _ = split_events(b"".join(received))
    return sum(output_tokens_of(data, model) for _, data in events)
