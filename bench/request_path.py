"""The gateway's own request path, driven in-process for bench/compare.py's instruction
count: `TollwayApp` called as ASGI (no sockets) with an upstream that answers at once,
so what is counted is the gateway's work — the edge, the request path, the ledger row —
and nothing else.

    valgrind --tool=callgrind --instr-atstart=no python bench/request_path.py json 1000

Instrumentation is switched on (`callgrind_control -i on`) only around the measured
requests, after start-up and a warm-up, so the count is those requests' alone; both
revisions run the same driver (it uses only what every revision has: `Gateway`,
`TollwayApp`, the ASGI call). Without valgrind it just runs (a smoke test).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tollway import config
from tollway.gateway import Gateway
from tollway.server.app import TollwayApp
from tollway.types import ChatRequest, Deployment, Reply, ReplyStream, Usage

WARM_UP = 200
USAGE = Usage(prompt_tokens=20, completion_tokens=5, total_tokens=25)
WORDS = ["Hel", "lo", " the", "re", "!"]


class Upstream:
    """Answers at once: a fixed reply, or five events with usage at the end."""

    name = "openai"

    async def complete(self, req: ChatRequest, dep: Deployment) -> Reply:
        return Reply(body={"id": "c", "object": "chat.completion", "model": dep.model,
                           "choices": [{"index": 0, "message": {
                               "role": "assistant", "content": "".join(WORDS)},
                               "finish_reason": "stop"}], "usage": USAGE.to_openai()},
                     model=dep.model, usage=USAGE)

    async def stream(self, req: ChatRequest, dep: Deployment) -> ReplyStream:
        out = ReplyStream(frames=_none(), model=dep.model)
        out.frames = _frames(out)
        return out

    async def close(self) -> None:
        """Nothing held."""


async def _none() -> AsyncIterator[bytes]:
    return
    yield


async def _frames(out: ReplyStream) -> AsyncIterator[bytes]:
    for i, word in enumerate(WORDS):
        chunk = {"id": "c", "object": "chat.completion.chunk", "model": out.model,
                 "choices": [{"index": 0, "delta": {"content": word},
                              "finish_reason": "stop" if i == len(WORDS) - 1 else None}]}
        blob = b"data: " + orjson.dumps(chunk) + b"\n\n"
        out.received.append(blob)
        yield blob
    out.usage = USAGE


def instrument(on: bool) -> None:
    """Switch callgrind's counting on or off for this process (no-op outside valgrind)."""
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
                   capture_output=True, check=False)


async def main(kind: str, n: int) -> None:
    store = tempfile.mkdtemp(prefix="tollway-path-")
    cfg = config.parse({
        "models": {"sim": {"deployments": [{"provider": "openai", "model": "gpt-4o-mini",
                                            "api_key": "k"}]}},
        "store": {"path": store}, "server": {"access_log": False},
        # No ledger write during the measured requests: its thread would be counted.
        "ledger": {"flush_seconds": 3600, "batch_rows": 10_000_000},
    }, env={})
    upstream = Upstream()
    gateway = Gateway(cfg, providers={"openai": upstream, "anthropic": upstream,
                                      "local": upstream})  # type: ignore[dict-item]
    app = TollwayApp(cfg, gateway)
    await gateway.start()
    warming = getattr(gateway, "_warming", None)
    if warming is not None:
        await warming  # the tokenizers load on a thread: not part of a request
    body = orjson.dumps({"model": "sim", "max_tokens": 10, "stream": kind == "stream",
                         "messages": [{"role": "user", "content": "hello there"}]})
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def one() -> None:
        gone = asyncio.get_running_loop().create_future()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Any:
            return messages.pop() if messages else await gone

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
                 "headers": headers, "client": ("10.0.0.1", 5000), "query_string": b""}
        await app(scope, receive, send)
        gone.cancel()
        assert sent[0]["status"] == 200, sent[0]
        sent.clear()

    for _ in range(WARM_UP):
        await one()
    instrument(True)
    for _ in range(n):
        await one()
    instrument(False)
    await gateway.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
