"""OpenAI's Responses API, spoken natively: a `POST /v1/responses` request routed to a
deployment that has it (`Deployment.responses_native`) goes to the upstream's own
`/responses` as the caller wrote it (`ChatRequest.native`: reasoning items, hosted
tools, every parameter), with the model, the output cap and `stream` the pipeline
decided.

The pipeline works on the chat view as for any answer: a JSON Response object becomes
a `chat.completion` (its text, function calls, finish and usage) carrying the Response
itself in `Reply.native`; a stream's events become chat chunks, each carrying the event
it came from under `"native"` (chat consumers — the meter, billing, the assembled body —
ignore the key; the Responses dialect forwards the events). Usage comes from
`response.completed` (or `response.incomplete`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tollway.errors import UpstreamError
from tollway.providers import http
from tollway.types import ChatRequest, Chunk, Deployment, FrameStream, Reply, ReplyStream, Usage
from tollway.wire import sse
from tollway.wire.responses_native import NATIVE

_ENDED = ("response.completed", "response.incomplete")


def body(req: ChatRequest, dep: Deployment) -> bytes:
    assert req.native is not None
    out = dict(req.native.body)
    out["model"] = dep.model
    out["stream"] = req.stream
    if not req.stream:
        out.pop("stream_options", None)
    limit = req.output_limit()  # as the pipeline capped it
    if limit is not None:
        out["max_output_tokens"] = limit
    return orjson.dumps(out)


def finish_of(response: dict[str, Any], calls: bool) -> str:
    reason = (response.get("incomplete_details") or {}).get("reason")
    if response.get("status") == "incomplete":
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if calls else "stop"


def chat_view(response: dict[str, Any], model: str) -> dict[str, Any]:
    """A Response object as a chat.completion: its messages' text and refusals, its
    function calls (hosted tools' items and reasoning have no chat form)."""
    text: list[str] = []
    refusal: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in response.get("output") or ():
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    text.append(part.get("text") or "")
                elif part.get("type") == "refusal":
                    refusal.append(part.get("refusal") or "")
        elif kind == "function_call":
            calls.append({"id": item.get("call_id") or "", "type": "function",
                          "function": {"name": item.get("name") or "",
                                       "arguments": item.get("arguments") or ""}})
    message: dict[str, Any] = {"role": "assistant",
                               "content": "".join(text) if text or not calls else None}
    if refusal:
        message["refusal"] = "".join(refusal)
    if calls:
        message["tool_calls"] = calls
    body: dict[str, Any] = {
        "id": response.get("id") or "", "object": "chat.completion",
        "created": response.get("created_at") or 0, "model": response.get("model") or model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": finish_of(response, bool(calls))}]}
    usage = Usage.from_responses(response.get("usage"))
    if usage is not None:
        body["usage"] = usage.to_openai()
    return body


def failure(response: Any, dep: Deployment) -> UpstreamError:
    err = response.get("error") if isinstance(response, dict) else None
    msg = err.get("message", err) if isinstance(err, dict) else err
    return UpstreamError(f"Upstream {http.where(dep)} failed: {msg or 'response failed'}")


async def complete(transport: http.Transport, url: str, headers: dict[str, str],
                   req: ChatRequest, dep: Deployment) -> Reply:
    data, ratelimit = await transport.post_json(url, body(req, dep), headers, dep)
    if data.get("status") == "failed":
        raise failure(data, dep)
    return Reply(body=chat_view(data, dep.model), model=str(data.get("model") or dep.model),
                 usage=Usage.from_responses(data.get("usage")), ratelimit=ratelimit, native=data)


async def stream(transport: http.Transport, url: str, headers: dict[str, str],
                 req: ChatRequest, dep: Deployment) -> ReplyStream:
    opened = await transport.open_stream(url, body(req, dep), headers, dep, "responses")
    out = ReplyStream(frames=sse.no_frames(), model=dep.model, ratelimit=opened.ratelimit,
                      flight=opened.flight)
    out.frames = _frames(opened, out, dep)
    return out


class _Chunks:
    """Chat chunks from Responses events, one per event."""

    def __init__(self, model: str) -> None:
        self.head: dict[str, Any] = {"id": "", "object": "chat.completion.chunk",
                                     "created": int(time.time()), "model": model}
        self.calls: dict[int, int] = {}  # output index -> tool call index

    def of(self, event: dict[str, Any], out: ReplyStream, dep: Deployment) -> Chunk:
        kind = event.get("type")
        delta: dict[str, Any] | None = None
        finish: str | None = None
        if kind == "response.output_text.delta":
            delta = {"content": event.get("delta") or ""}
        elif kind == "response.refusal.delta":
            delta = {"refusal": event.get("delta") or ""}
        elif kind == "response.function_call_arguments.delta":
            slot = self.calls.get(event.get("output_index", -1))
            if slot is not None:
                delta = {"tool_calls": [{"index": slot, "function": {
                    "arguments": event.get("delta") or ""}}]}
        elif kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                slot = self.calls[event.get("output_index", -1)] = len(self.calls)
                delta = {"tool_calls": [{"index": slot, "id": item.get("call_id") or "",
                                         "type": "function", "function": {
                                             "name": item.get("name") or "",
                                             "arguments": ""}}]}
        elif kind == "response.created":
            response = event.get("response") or {}
            self.head["id"] = response.get("id") or ""
            delta = {"role": "assistant", "content": ""}
        elif kind in _ENDED:
            response = event.get("response") or {}
            out.usage = Usage.from_responses(response.get("usage"))
            finish, delta = finish_of(response, bool(self.calls)), {}
        elif kind in ("response.failed", "error"):
            raise failure(event.get("response") or event, dep)
        choices = [] if delta is None else [{"index": 0, "delta": delta,
                                             "finish_reason": finish}]
        return {**self.head, "choices": choices, NATIVE: event}


async def _frames(opened: http.OpenStream, out: ReplyStream, dep: Deployment) -> FrameStream:
    chunks = _Chunks(dep.model)
    async with http.stream_errors(opened, dep):
        async for batch in opened.batches():
            blob: list[bytes] = []
            ended = False
            for _, data in batch:
                event = http.parse_event(data, dep)
                blob.append(sse.frame(chunks.of(event, out, dep)))
                ended = ended or event.get("type") in _ENDED
            if blob:
                joined = b"".join(blob)
                out.received.append(joined)
                yield joined
            if ended:
                return
        raise UpstreamError(f"Upstream {http.where(dep)} closed the stream before "
                            "response.completed.")
