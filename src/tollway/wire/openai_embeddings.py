"""OpenAI embeddings wire format: parse a request, write the reply.

A request's `input` is a string, an array of strings, one token array (integers) or an
array of token arrays; every shape is checked here, so a bad one is a 400 naming the
parameter before anything is held or sent. The reply is OpenAI's `list` of `embedding`
objects, each vector as JSON floats or, for `encoding_format: base64` (what the openai
SDK asks for by default, and decodes), the base64 of its little-endian float32 bytes.
"""

from __future__ import annotations

import array
import base64
import sys
from collections.abc import Sequence
from typing import Any

from tollway.errors import InvalidRequest
from tollway.types import EmbeddingRequest
from tollway.wire.expect import bad_value, missing, shallow
from tollway.wire.openai import parse_json_body

MAX_INPUTS = 2048  # OpenAI's limit on the inputs of one request
MAX_DIMENSIONS = 65_536  # past any embedding model's width: keeps huge integers local
MAX_TOKEN_ID = 2**31 - 1
_SHAPES = ("a string, an array of strings, an array of token ids (integers) or an array "
           "of token arrays")


def parse_embedding_request(body: bytes, *, max_inputs: int = MAX_INPUTS) -> EmbeddingRequest:
    return embedding_request(parse_json_body(body), max_inputs=max_inputs)


def embedding_request(data: dict[str, Any], *, max_inputs: int = MAX_INPUTS
                      ) -> EmbeddingRequest:
    """The request a JSON object asks for (`data` is consumed: what is left is
    forwarded as it is)."""
    model = data.pop("model", None)
    if model is None:
        raise missing("model")
    if not isinstance(model, str) or not model:
        raise bad_value("model", "expected a non-empty string")
    if "input" not in data:
        raise missing("input")
    inputs, tokens = _inputs(data.pop("input"), max_inputs)
    fmt = data.pop("encoding_format", None)
    if fmt is None:
        fmt = "float"
    elif fmt not in ("float", "base64"):
        raise bad_value("encoding_format", f"expected 'float' or 'base64', got {_show(fmt)}")
    dims = data.pop("dimensions", None)
    if dims is not None and (type(dims) is not int or not 1 <= dims <= MAX_DIMENSIONS):
        raise bad_value("dimensions", f"expected an integer from 1 to {MAX_DIMENSIONS}, "
                        f"got {_show(dims)}")
    user = data.pop("user", None)
    if user is not None and not isinstance(user, str):
        raise bad_value("user", f"expected a string, got {_show(user)}")
    for name, value in data.items():  # forwarded as they are: bounded in depth
        shallow(value, [name])
    return EmbeddingRequest(model=model, input=inputs, tokens=tokens, encoding_format=fmt,
                            dimensions=dims, user=user, extra=data)


def _inputs(v: Any, max_inputs: int) -> tuple[list[str] | list[list[int]], bool]:
    """The inputs as a list, and whether they are token arrays."""
    if isinstance(v, str):
        if not v:
            raise bad_value("input", "an empty string cannot be embedded")
        return [v], False
    if not isinstance(v, list):
        raise bad_value("input", f"expected {_SHAPES}, got {_show(v)}")
    if not v:
        raise bad_value("input", "expected at least one input, got an empty array")
    first = v[0]
    if type(first) is int:  # one token array
        _token_ids(v, "input")
        return [v], True
    if len(v) > max_inputs:
        raise InvalidRequest(f"Too many inputs: {len(v)} (limit: {max_inputs} per request).",
                             param="input", code="too_many_inputs")
    if isinstance(first, str):
        for i, s in enumerate(v):
            if not isinstance(s, str):
                raise bad_value(f"input[{i}]", f"expected a string as input[0] is, got {_show(s)}")
            if not s:
                raise bad_value(f"input[{i}]", "an empty string cannot be embedded")
        return v, False
    if isinstance(first, list):
        for i, t in enumerate(v):
            if not isinstance(t, list):
                raise bad_value(f"input[{i}]", f"expected a token array as input[0] is, got "
                                f"{_show(t)}")
            if not t:
                raise bad_value(f"input[{i}]", "an empty token array cannot be embedded")
            _token_ids(t, f"input[{i}]")
        return v, True
    raise bad_value("input[0]", f"expected a string, a token id or a token array, got "
                    f"{_show(first)}")


def _token_ids(ids: list[Any], param: str) -> None:
    for j, t in enumerate(ids):
        if type(t) is not int or not 0 <= t <= MAX_TOKEN_ID:
            raise bad_value(f"{param}[{j}]", f"expected a token id (an integer from 0 to "
                            f"{MAX_TOKEN_ID}), got {_show(t)}")


def _show(v: Any) -> str:
    """A value as an error message names it: short, and typed."""
    if isinstance(v, str):
        return repr(v[:40] + "…") if len(v) > 40 else repr(v)
    if isinstance(v, bool | int | float) or v is None:
        text = repr(v)
        return text if len(text) <= 40 else text[:40] + "…"
    return {"list": "an array", "dict": "an object"}.get(type(v).__name__, type(v).__name__)


def upstream_body(req: EmbeddingRequest, model: str) -> dict[str, Any]:
    """The request as an OpenAI-compatible upstream should receive it."""
    out: dict[str, Any] = {"model": model, "input": req.input,
                           "encoding_format": req.encoding_format}
    if req.dimensions is not None:
        out["dimensions"] = req.dimensions
    if req.user is not None:
        out["user"] = req.user
    out.update(req.extra)
    return out


def vector_value(f32le: bytes, encoding_format: str) -> list[float] | str:
    """One embedding as the reply carries it, from its little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(f32le).decode("ascii")
    floats = array.array("f", f32le)
    if sys.byteorder == "big":  # pragma: no cover - no big-endian CI
        floats.byteswap()
    return floats.tolist()


def reply_body(vectors: Sequence[bytes], model: str, prompt_tokens: int,
               encoding_format: str) -> dict[str, Any]:
    """OpenAI's embeddings reply: the vectors (little-endian float32 bytes) in input order."""
    return {"object": "list",
            "data": [{"object": "embedding", "index": i,
                      "embedding": vector_value(v, encoding_format)}
                     for i, v in enumerate(vectors)],
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
