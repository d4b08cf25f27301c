"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp, Groq, Together,
OpenRouter, Azure OpenAI): the canonical request is already their format, and their
stream events are forwarded as they are (only usage and error events are parsed).
A Responses API request to a deployment that speaks it natively goes to its
`/responses` instead (`openai_responses.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import orjson

from tollway.errors import UpstreamError
from tollway.providers import http, openai_batch, openai_responses
from tollway.providers.base import LineResult
from tollway.types import (
    ChatRequest,
    Deployment,
    EmbeddingRequest,
    FrameStream,
    Reply,
    ReplyStream,
    Usage,
)
from tollway.wire import sse
from tollway.wire.openai import upstream_body
from tollway.wire.openai_embeddings import upstream_body as embeddings_body

DEFAULT_BASE = "https://api.openai.com/v1"


def _endpoint(dep: Deployment, path: str) -> str:
    base = (dep.api_base or DEFAULT_BASE).rstrip("/")
    if "azure.com" in base and "/openai/deployments/" in base:
        # Azure: api_base is .../openai/deployments/<name>?api-version=...
        base, _, query = base.partition("?")
        return f"{base}/{path}" + (f"?{query}" if query else "")
    return f"{base}/{path}"


@cache
def _url(dep: Deployment) -> str:
    return _endpoint(dep, "chat/completions")


@cache
def _embeddings_url(dep: Deployment) -> str:
    return _endpoint(dep, "embeddings")


@cache
def _responses_url(dep: Deployment) -> str:
    return _endpoint(dep, "responses")


@cache
def _headers(dep: Deployment) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if dep.api_key:
        if dep.api_base and "azure.com" in dep.api_base:
            h["api-key"] = dep.api_key
        else:
            h["Authorization"] = f"Bearer {dep.api_key}"
    h.update(dep.headers)
    return h


class OpenAIProvider:
    name = "openai"

    def __init__(self, transport: http.Transport) -> None:
        self.transport = transport

    async def close(self) -> None:
        """Nothing of its own: the transport is the gateway's."""

    async def complete(self, req: ChatRequest, dep: Deployment) -> Reply:
        if req.native is not None and dep.responses_native:
            return await openai_responses.complete(self.transport, _responses_url(dep),
                                                   _headers(dep), req, dep)
        body = orjson.dumps(upstream_body(req, dep.model))
        data, ratelimit = await self.transport.post_json(_url(dep), body, _headers(dep), dep)
        return Reply(body=data, model=str(data.get("model") or dep.model),
                     usage=Usage.from_openai(data.get("usage")), ratelimit=ratelimit)

    async def embed(self, req: EmbeddingRequest, dep: Deployment) -> Reply:
        body = orjson.dumps(embeddings_body(req, dep.model))
        data, ratelimit = await self.transport.post_json(_embeddings_url(dep), body,
                                                         _headers(dep), dep)
        if not isinstance(data.get("data"), list):
            raise UpstreamError(f"Upstream {http.where(dep)} answered without embeddings "
                                "(no `data` array).")
        return Reply(body=data, model=str(data.get("model") or dep.model),
                     usage=Usage.from_openai(data.get("usage")), ratelimit=ratelimit)

    def batch_line(self, req: ChatRequest | EmbeddingRequest, dep: Deployment
                   ) -> tuple[str, bytes]:
        if isinstance(req, EmbeddingRequest):
            return "/v1/embeddings", orjson.dumps(embeddings_body(req, dep.model))
        return "/v1/chat/completions", orjson.dumps(upstream_body(req, dep.model))

    async def run_batch(self, dep: Deployment, endpoint: str,
                        lines: Sequence[tuple[str, bytes]], poll_s: float
                        ) -> dict[str, LineResult]:
        """Lines through OpenAI's Batch API (`openai_batch.py`)."""
        return await openai_batch.run(self.transport, dep, endpoint, lines, poll_s,
                                      lambda path: _endpoint(dep, path), _headers(dep))

    def batch_reply(self, body: dict[str, Any], dep: Deployment) -> Reply:
        return Reply(body=body, model=str(body.get("model") or dep.model),
                     usage=Usage.from_openai(body.get("usage")), batch=True)

    async def stream(self, req: ChatRequest, dep: Deployment) -> ReplyStream:
        if req.native is not None and dep.responses_native:
            return await openai_responses.stream(self.transport, _responses_url(dep),
                                                 _headers(dep), req, dep)
        body = orjson.dumps(upstream_body(req, dep.model))
        stream = await self.transport.open_stream(_url(dep), body, _headers(dep), dep)
        out = ReplyStream(frames=sse.no_frames(), model=dep.model,
                          ratelimit=stream.ratelimit, flight=stream.flight)
        out.frames = _frames(stream, out, dep)
        return out


async def _frames(stream: http.OpenStream, out: ReplyStream, dep: Deployment) -> FrameStream:
    """Forward the upstream's bytes as they arrive, cut at event boundaries. Only a read
    that holds a usage object, an error or the end is split into events and looked at:
    usage is recorded (and forwarded only if the client asked), an error raises."""
    async with http.stream_errors(stream, dep):
        rest = b""
        async for piece in stream.pieces():
            buf = rest + piece if rest else piece
            end = buf.rfind(b"\n\n")
            if end < 0:
                rest = buf
                continue
            ready, rest = buf[: end + 2], buf[end + 2:]
            # Quotes inside generated text are escaped, so these only match keys. OpenAI
            # sends "usage":null on every chunk when usage is on: those need no look.
            if (b'"usage":{' in ready or b'"usage": {' in ready or b'"error"' in ready
                    or b"[DONE]" in ready or b"\r" in ready):
                blob, done = _look(ready, out, dep)
                if blob:
                    out.received.append(blob)
                    yield blob
                if done:
                    return
            else:
                out.received.append(ready)
                yield ready
        raise UpstreamError(f"Upstream {http.where(dep)} closed the stream before [DONE].")


def _look(ready: bytes, out: ReplyStream, dep: Deployment) -> tuple[bytes, bool]:
    """The slow path: events one by one. Returns what to forward and whether the
    stream ended ([DONE])."""
    events, _ = sse.split_events(ready)
    blob: list[bytes] = []
    for _, data in events:
        if data == b"[DONE]":
            return b"".join(blob), True
        if b'"usage":{' in data or b'"usage": {' in data or b'"error"' in data:
            data = _inspect(data, out, dep)
            if not data:
                continue
        blob += (b"data: ", data, b"\n\n")
    return b"".join(blob), False


def _inspect(data: bytes, out: ReplyStream, dep: Deployment) -> bytes:
    """Record usage / raise on error; returns the event to forward (b"" for none)."""
    chunk = http.parse_event(data, dep)
    if "error" in chunk and "choices" not in chunk:
        err = chunk["error"]
        msg = err.get("message", err) if isinstance(err, dict) else err
        raise UpstreamError(f"Upstream {http.where(dep)} failed mid-stream: {msg}")
    u = chunk.get("usage")
    if not u:
        return data
    out.usage = Usage.from_openai(u)
    if not chunk.get("choices"):
        return data if out.emit_usage else b""
    if out.emit_usage:
        return data
    # Usage riding on a content chunk (some compatible servers): keep the content only.
    return orjson.dumps({k: v for k, v in chunk.items() if k != "usage"})
