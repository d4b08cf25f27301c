"""OpenAI embeddings, as api.openai.com speaks them: POST /v1/embeddings.

Vectors are deterministic — a function of the model and the input alone (a seeded
normal draw, L2-normalised), so the same text always gets the same vector — and have
the model's real size (`dimensions` in the price table: text-embedding-3-small 1536,
-large 3072, ada-002 1536; 1536 for a model it does not know). `dimensions` shortens
them as OpenAI does for text-embedding-3 (the first N, renormalised) and is refused
by the models that cannot. Usage is the true token count of the inputs (a token array
is its length). Faults, the rate limit and the stats are the chat endpoint's: the
request runs through the same `Simulator._serve`, with no output tokens.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import orjson

from tollway.accounting.tokens import count_inputs
from tollway.errors import InvalidRequest
from tollway.simulate.models import price_table
from tollway.simulate.openai_wire import OpenAIDialect
from tollway.simulate.plan import ChoicePlan, EmbeddingSpec, SimRequest
from tollway.simulate.wire import BadRequest, ReplyContext
from tollway.types import EmbeddingRequest
from tollway.wire.openai_embeddings import embedding_request, reply_body

DEFAULT_DIMENSIONS = 1536


def spec_of(req: EmbeddingRequest) -> EmbeddingSpec:
    fact = price_table().get(req.model)
    size = fact.dimensions if fact is not None and fact.dimensions else DEFAULT_DIMENSIONS
    shortens = fact.shortens if fact is not None and fact.dimensions else True
    dims = req.dimensions
    if dims is not None and not shortens:
        raise BadRequest("This model does not support specifying dimensions.", "dimensions")
    if dims is not None and dims > size:
        raise BadRequest(f"Invalid value for 'dimensions' = {dims}. Must be less than or "
                         f"equal to {size}.", "dimensions")
    return EmbeddingSpec(req, size, dims or size)


def vector(model: str, item: str | list[int], size: int, dimensions: int) -> bytes:
    """The input's vector (little-endian float32): the model's full one, cut to
    `dimensions` and renormalised."""
    key = item if isinstance(item, str) else ",".join(map(str, item))
    seed = int.from_bytes(hashlib.blake2b(f"{model}\0{key}".encode(), digest_size=8).digest(),
                          "little")
    v = np.random.default_rng(seed).standard_normal(size)[:dimensions]
    v /= np.linalg.norm(v)
    return v.astype("<f4").tobytes()


def reply(spec: EmbeddingSpec, model: str, prompt_tokens: int) -> dict[str, Any]:
    req = spec.req
    return reply_body([vector(req.model, item, spec.size, spec.dimensions) for item in req.input],
                      model, prompt_tokens, req.encoding_format)


class EmbeddingsDialect(OpenAIDialect):
    """The OpenAI dialect (its errors and rate-limit headers), parsing embeddings."""

    endpoint = "/v1/embeddings"
    id_prefix = "emb-"

    def parse(self, body: Any) -> SimRequest:
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        try:
            req = embedding_request(dict(body))  # (it consumes its argument)
        except InvalidRequest as e:
            raise BadRequest(e.message, e.param) from None
        spec = spec_of(req)
        return SimRequest(model=req.model, prompt_key="", prompt_tokens=count_inputs(
            req, req.model), limit=0, embedding=spec)

    def reply_body(self, ctx: ReplyContext, req: SimRequest, plans: list[ChoicePlan]) -> bytes:
        assert req.embedding is not None
        return orjson.dumps(reply(req.embedding, ctx.model, req.prompt_tokens))
