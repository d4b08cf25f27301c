"""POST /v1/embeddings: OpenAI's embeddings endpoint, through the same endpoint code as
chat (`ChatEndpoint`: the key, the body, the disconnect watch, the reply headers with
the cost, `finish` on every path) with its own dialect — parsed by
`wire/openai_embeddings.py`, handled by `Pipeline.embed`, never streamed."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from tollway.server.asgi import json_bytes
from tollway.server.chat import Dialect
from tollway.types import EmbeddingRequest, ReplyStream
from tollway.wire import openai as openai_wire
from tollway.wire.openai_embeddings import parse_embedding_request


def _no_stream(stream: ReplyStream, _: int) -> AsyncGenerator[bytes, None]:
    raise AssertionError("embeddings are never streamed")


EMBEDDINGS: Dialect[EmbeddingRequest] = Dialect(
    parse=lambda body, server: parse_embedding_request(body),
    reply=lambda reply: json_bytes(reply.body),
    frames=_no_stream,
    stream_end=b"",
    stream_error=lambda e: openai_wire.sse_frame(e.body()),
    error=lambda e: e.to_json(),
    handle=lambda pipeline: pipeline.embed,
)
