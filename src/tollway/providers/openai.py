"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp, Groq, Together,
OpenRouter, Azure OpenAI): the canonical request is already their format, and their
stream events are forwarded as they are (only usage and error events are parsed)."""

from __future__ import annotations

from functools import cache

import orjson

from tollway.errors import UpstreamError
from tollway.providers import http
from tollway.types import ChatRequest, Deployment, FrameStream, Reply, ReplyStream, Usage
from tollway.wire.openai import upstream_body

DEFAULT_BASE = "https://api.openai.com/v1"


@cache
def _url(dep: Deployment) -> str:
    base = (dep.api_base or DEFAULT_BASE).rstrip("/")
    if "azure.com" in base and "/openai/deployments/" in base:
        # Azure: api_base is .../openai/deployments/<name>?api-version=...
        path, _, query = base.partition("?")
        return f"{path}/chat/completions" + (f"?{query}" if query else "")
    return f"{base}/chat/completions"


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

    async def complete(self, req: ChatRequest, dep: Deployment) -> Reply:
        body = orjson.dumps(upstream_body(req, dep.model))
        data = await http.post_json(_url(dep), body, _headers(dep), dep)
        return Reply(body=data, model=str(data.get("model") or dep.model),
                     usage=Usage.from_openai(data.get("usage")))

    async def stream(self, req: ChatRequest, dep: Deployment) -> ReplyStream:
        body = orjson.dumps(upstream_body(req, dep.model))
        stream = await http.open_stream(_url(dep), body, _headers(dep), dep)
        out = ReplyStream(frames=http.no_frames(), model=dep.model)
        out.frames = _frames(stream, out, dep)
        return out


async def _frames(stream: http.OpenStream, out: ReplyStream, dep: Deployment) -> FrameStream:
    """Forward each network read's events as one blob. Only events that mention usage
    or an error are parsed: usage is recorded (and forwarded only if the client asked),
    an error raises."""
    async with http.stream_errors(stream, dep):
        async for batch in stream.events():
            blob: list[bytes] = []
            for _, data in batch:
                if data == b"[DONE]":
                    if blob:
                        yield b"".join(blob)
                    return
                # Quotes inside generated text are escaped, so these only match keys.
                # OpenAI sends "usage":null on every chunk when usage is on: skip those.
                if b'"usage":{' in data or b'"usage": {' in data or b'"error"' in data:
                    data = _inspect(data, out, dep)
                    if not data:
                        continue
                blob += (b"data: ", data, b"\n\n")
            if blob:
                yield b"".join(blob)
        raise UpstreamError(f"Upstream {http.where(dep)} closed the stream before [DONE].")


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
