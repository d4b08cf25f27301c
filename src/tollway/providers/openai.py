"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp, Groq, Together,
OpenRouter, Azure OpenAI): the canonical request is already their format."""

from __future__ import annotations

from functools import cache

import orjson

from tollway.errors import UpstreamError
from tollway.providers import http
from tollway.types import ChatRequest, ChunkStream, Deployment, Reply, ReplyStream, Usage
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
        out = ReplyStream(chunks=http.no_chunks(), model=dep.model)
        out.chunks = _chunks(stream, out, dep)
        return out


async def _chunks(stream: http.OpenStream, out: ReplyStream, dep: Deployment) -> ChunkStream:
    """Parse upstream SSE into chunk objects; record usage and the answering model."""
    async with http.stream_errors(stream, dep):
        ev = stream.first
        while ev is not None:
            if ev[1] == b"[DONE]":
                return
            chunk = http.parse_event(ev, dep)
            if "error" in chunk and "choices" not in chunk:
                err = chunk["error"]
                msg = err.get("message", err) if isinstance(err, dict) else err
                raise UpstreamError(f"Upstream {http.where(dep)} failed mid-stream: {msg}")
            if chunk.get("model"):
                out.model = chunk["model"]
            u = chunk.get("usage")
            if u:
                out.usage = Usage.from_openai(u)
            yield chunk
            ev = await anext(stream.events, None)
        raise UpstreamError(f"Upstream {http.where(dep)} closed the stream before [DONE].")
