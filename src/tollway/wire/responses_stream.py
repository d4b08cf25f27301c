"""A chat stream as Responses API events, in OpenAI's order:

    response.created, response.in_progress
    per assistant message:  response.output_item.added, response.content_part.added,
                            response.output_text.delta ... (or response.refusal.delta),
                            response.output_text.done, response.content_part.done,
                            response.output_item.done
    per function call:      response.output_item.added,
                            response.function_call_arguments.delta ...,
                            response.function_call_arguments.done, response.output_item.done
    response.completed (or response.incomplete: the output limit or a content filter)

each with its `sequence_number`. A message is closed when the first tool call starts;
the function calls are closed at the end (chat streams their arguments by index, in
any order). The finished Response object is handed to `keep` (stored) before
`response.completed` goes out, so a client that sees it can continue the response
anywhere. An error after the stream began is `response.failed` (`failed`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import orjson

from tollway.errors import TollwayError
from tollway.types import ChunkStream, FrameStream, Usage
from tollway.wire.responses import Draft, incomplete_reason, response_object
from tollway.wire.responses_items import new_id, output_text

Keep = Callable[[bytes], Awaitable[None]]


def event(d: Draft, kind: str, **fields: Any) -> bytes:
    data = orjson.dumps({"type": kind, "sequence_number": d.sequence, **fields})
    d.sequence += 1
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


@dataclass(slots=True)
class _Part:
    kind: str  # output_text | refusal
    pieces: list[str] = field(default_factory=list)

    def whole(self) -> dict[str, Any]:
        text = "".join(self.pieces)
        return output_text(text) if self.kind == "output_text" else {"type": "refusal",
                                                                     "refusal": text}


@dataclass(slots=True)
class _Message:
    id: str
    index: int  # in the response's output
    parts: list[_Part] = field(default_factory=list)


@dataclass(slots=True)
class _Call:
    id: str
    index: int
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    def item(self, status: str) -> dict[str, Any]:
        return {"id": self.id, "type": "function_call", "status": status,
                "arguments": "".join(self.arguments), "call_id": self.call_id,
                "name": self.name}


class _Output:
    """The response's output as it streams: the events for each delta, and the items."""

    def __init__(self, d: Draft) -> None:
        self.d = d
        self.items: list[dict[str, Any] | None] = []  # by output index; None while open
        self.message: _Message | None = None
        self.calls: dict[int, _Call] = {}

    def text(self, kind: str, delta: str) -> bytes:
        d, out = self.d, b""
        m = self.message
        if m is None:
            m = self.message = _Message(new_id("msg"), len(self.items))
            self.items.append(None)
            out += event(d, "response.output_item.added", output_index=m.index, item={
                "id": m.id, "type": "message", "status": "in_progress", "content": [],
                "role": "assistant"})
        if not m.parts or m.parts[-1].kind != kind:
            if m.parts:
                out += self._close_part(m)
            m.parts.append(_Part(kind))
            out += event(d, "response.content_part.added", item_id=m.id,
                         output_index=m.index, content_index=len(m.parts) - 1,
                         part=_Part(kind).whole())
        m.parts[-1].pieces.append(delta)
        if kind == "output_text":
            return out + event(d, "response.output_text.delta", item_id=m.id,
                               output_index=m.index, content_index=len(m.parts) - 1,
                               delta=delta, logprobs=[])
        return out + event(d, "response.refusal.delta", item_id=m.id, output_index=m.index,
                           content_index=len(m.parts) - 1, delta=delta)

    def tool_call(self, tc: dict[str, Any]) -> bytes:
        d, out = self.d, b""
        fn = tc.get("function") or {}
        slot = tc.get("index", 0)
        call = self.calls.get(slot)
        if call is None:
            out += self.close_message("completed")
            call = self.calls[slot] = _Call(new_id("fc"), len(self.items),
                                            tc.get("id") or new_id("call"), fn.get("name") or "")
            self.items.append(None)
            out += event(d, "response.output_item.added", output_index=call.index,
                         item=call.item("in_progress"))
        elif fn.get("name"):
            call.name += fn["name"]
        if fn.get("arguments"):
            call.arguments.append(fn["arguments"])
            out += event(d, "response.function_call_arguments.delta", item_id=call.id,
                         output_index=call.index, delta=fn["arguments"])
        return out

    def _close_part(self, m: _Message) -> bytes:
        part, index = m.parts[-1], len(m.parts) - 1
        whole = part.whole()
        if part.kind == "output_text":
            done = event(self.d, "response.output_text.done", item_id=m.id,
                         output_index=m.index, content_index=index, text=whole["text"],
                         logprobs=[])
        else:
            done = event(self.d, "response.refusal.done", item_id=m.id, output_index=m.index,
                         content_index=index, refusal=whole["refusal"])
        return done + event(self.d, "response.content_part.done", item_id=m.id,
                            output_index=m.index, content_index=index, part=whole)

    def close_message(self, status: str) -> bytes:
        m = self.message
        if m is None:
            return b""
        self.message = None
        out = self._close_part(m) if m.parts else b""
        item = {"id": m.id, "type": "message", "status": status,
                "content": [p.whole() for p in m.parts], "role": "assistant"}
        self.items[m.index] = item
        return out + event(self.d, "response.output_item.done", output_index=m.index,
                           item=item)

    def close(self, status: str) -> bytes:
        if not self.items:  # nothing was said: still one (empty) message, as OpenAI has
            self.text("output_text", "")
        out = self.close_message(status)
        for slot in sorted(self.calls):
            call = self.calls[slot]
            item = self.items[call.index] = call.item(status)
            out += event(self.d, "response.function_call_arguments.done", item_id=call.id,
                         output_index=call.index, arguments=item["arguments"],
                         name=call.name)
            out += event(self.d, "response.output_item.done", output_index=call.index,
                         item=item)
        return out


async def events(chunks: ChunkStream, d: Draft, model: str, keep: Keep) -> FrameStream:
    """The events of one response, from the chat chunks of its answer (which carry the
    usage: the parsed request asked for it)."""
    yield event(d, "response.created",
                response=response_object(d, model, "in_progress", [], None))
    yield event(d, "response.in_progress",
                response=response_object(d, model, "in_progress", [], None))
    out = _Output(d)
    usage: Usage | None = None
    finish: str | None = None
    async with aclosing(chunks):
        async for chunk in chunks:
            if chunk.get("usage"):
                usage = Usage.from_openai(chunk["usage"])
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0:
                    continue  # Responses has no `n`
                delta = choice.get("delta") or {}
                blob = b""
                if delta.get("content"):
                    blob += out.text("output_text", delta["content"])
                if delta.get("refusal"):
                    blob += out.text("refusal", delta["refusal"])
                for tc in delta.get("tool_calls") or ():
                    blob += out.tool_call(tc)
                finish = choice.get("finish_reason") or finish
                if blob:
                    yield blob
    reason = incomplete_reason(finish)
    status = "incomplete" if reason else "completed"
    tail = out.close(status)
    items = [i for i in out.items if i is not None]
    whole = orjson.dumps(response_object(d, model, status, items, usage, incomplete=reason,
                                         completed_at=None if reason else int(time.time())))
    await keep(whole)
    kind = f"response.{status}"
    yield tail + (b"event: " + kind.encode() + b"\ndata: "
                  + orjson.dumps({"type": kind, "sequence_number": d.sequence})[:-1]
                  + b',"response":' + whole + b"}\n\n")
    d.sequence += 1


def failed(d: Draft, model: str, err: TollwayError) -> bytes:
    """An error after the stream began: `response.failed`, which the SDKs and agent
    frameworks treat as the end of the response."""
    code = "rate_limit_exceeded" if err.status == 429 else "server_error"
    error = {"code": code, "message": err.message}
    return event(d, "response.failed", response=response_object(
        d, model, "failed", [], None, error=error))
