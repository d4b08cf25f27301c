"""A native deployment's answer, as the gateway's own response: the upstream's Response
object and events go to the client as they are, under the gateway's response id and
creation time (GET, DELETE and previous_response_id work on them like on any stored
response), the `store` and `previous_response_id` the caller sent, and the gateway's
own event numbering.

A stream whose chunks carry no Responses events (a cache hit's replay) is translated
as any chat stream (`responses_stream.events`); one the cost meter cut short ends with
`response.incomplete` made here from the items done so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import orjson

from tollway.types import Chunk, ChunkStream, FrameStream, ReplyStream
from tollway.wire.responses import Draft, usage_object
from tollway.wire.responses_stream import Keep

NATIVE = "native"  # providers/openai_responses.py: the event a chat chunk came from
_ENDED = ("response.completed", "response.incomplete")


def as_gateways(d: Draft, response: dict[str, Any]) -> dict[str, Any]:
    """The upstream's Response object under the gateway's id."""
    out = dict(response)
    out["id"], out["created_at"] = d.id, d.created_at
    out["store"] = d.echo["store"]
    out["previous_response_id"] = d.echo["previous_response_id"]
    return out


async def _chained(first: Chunk, rest: ChunkStream) -> ChunkStream:
    yield first
    async for chunk in rest:
        yield chunk


def _frame(d: Draft, event: dict[str, Any]) -> bytes:
    event["sequence_number"] = d.sequence
    d.sequence += 1
    return (b"event: " + str(event.get("type")).encode() + b"\ndata: " + orjson.dumps(event)
            + b"\n\n")


async def events(chunks: ChunkStream, d: Draft, stream: ReplyStream, keep: Keep,
                 translated: Callable[[ChunkStream], FrameStream]) -> FrameStream:
    async with aclosing(chunks):
        first = await anext(chunks, None)
        if first is None or NATIVE not in first:
            if first is None:
                return
            async with aclosing(translated(_chained(first, chunks))) as frames:
                async for blob in frames:
                    yield blob
            return
        d.native = True
        snapshot: dict[str, Any] = {}
        done: dict[int, Any] = {}  # output index -> finished item
        async for chunk in _chained(first, chunks):
            event = chunk.get(NATIVE)
            if not isinstance(event, dict):
                if any(c.get("finish_reason") for c in chunk.get("choices") or ()):
                    yield await _cut(d, snapshot, done, stream, keep)
                    return
                continue
            kind = event.get("type")
            response = event.get("response")
            if isinstance(response, dict):
                response = event["response"] = as_gateways(d, response)
                snapshot = response
            if kind == "response.output_item.done":
                done[int(event.get("output_index") or 0)] = event.get("item")
            if kind in _ENDED and isinstance(response, dict):
                await keep(orjson.dumps(response))  # stored before the client sees the end
            yield _frame(d, event)


async def _cut(d: Draft, snapshot: dict[str, Any], done: dict[int, Any],
               stream: ReplyStream, keep: Keep) -> bytes:
    """The meter ended the stream at the cost ceiling: the response is incomplete."""
    response = {**snapshot, "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
                "completed_at": None, "output": [done[i] for i in sorted(done)],
                "usage": usage_object(stream.usage)}
    response.setdefault("created_at", int(time.time()))
    await keep(orjson.dumps(response))
    return _frame(d, {"type": "response.incomplete", "response": response})
