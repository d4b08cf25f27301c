"""Embeddings in-process: the request parser (every bad shape a 400 naming the
parameter), the reply's encodings, which models answer which endpoint and with how
many dimensions (`Routes`), the token count, and the simulator's vectors."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest

from tollway.accounting import tokens
from tollway.accounting.settlement import Releases
from tollway.config import parse
from tollway.errors import InvalidRequest
from tollway.gateway.routes import Routes
from tollway.routing.router import Router
from tollway.simulate.embeddings import spec_of, vector
from tollway.simulate.wire import BadRequest
from tollway.types import EmbeddingRequest
from tollway.wire.openai_embeddings import (
    MAX_INPUTS,
    parse_embedding_request,
    reply_body,
    upstream_body,
)


def parsed(**body: Any) -> EmbeddingRequest:
    return parse_embedding_request(orjson.dumps(body))


def test_every_input_shape_is_a_list() -> None:
    assert (parsed(model="m", input="hi").input, parsed(model="m", input="hi").tokens) == (
        ["hi"], False)
    assert parsed(model="m", input=["a", "b"]).input == ["a", "b"]
    one = parsed(model="m", input=[1, 2, 3])
    assert (one.input, one.tokens) == ([[1, 2, 3]], True)
    assert parsed(model="m", input=[[1], [2, 3]]).input == [[1], [2, 3]]
    req = parsed(model="m", input="x", dimensions=8, user="u", encoding_format="base64",
                 truncate_prompt_tokens=5)
    assert (req.dimensions, req.user, req.encoding_format) == (8, "u", "base64")
    assert upstream_body(req, "up") == {"model": "up", "input": ["x"],
                                        "encoding_format": "base64", "dimensions": 8,
                                        "user": "u", "truncate_prompt_tokens": 5}
    assert parsed(model="m", input="x").encoding_format == "float"


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x"}, "model"),
    ({"model": "", "input": "x"}, "model"),
    ({"model": 5, "input": "x"}, "model"),
    ({"model": "m"}, "input"),
    ({"model": "m", "input": None}, "input"),
    ({"model": "m", "input": ""}, "input"),
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": {"text": "x"}}, "input"),
    ({"model": "m", "input": 7}, "input"),
    ({"model": "m", "input": ["a", ""]}, "input[1]"),
    ({"model": "m", "input": ["a", 3]}, "input[1]"),
    ({"model": "m", "input": [1, "a"]}, "input[1]"),
    ({"model": "m", "input": [1, -2]}, "input[1]"),
    ({"model": "m", "input": [1, True]}, "input[1]"),
    ({"model": "m", "input": [1, 2**31]}, "input[1]"),
    ({"model": "m", "input": [[1], []]}, "input[1]"),
    ({"model": "m", "input": [[1], "a"]}, "input[1]"),
    ({"model": "m", "input": [[1], [0.5]]}, "input[1][0]"),
    ({"model": "m", "input": [None]}, "input[0]"),
    ({"model": "m", "input": [{"a": 1}]}, "input[0]"),
    ({"model": "m", "input": ["x"] * (MAX_INPUTS + 1)}, "input"),
    ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "m", "input": "x", "encoding_format": 1}, "encoding_format"),
    ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "m", "input": "x", "dimensions": 1.5}, "dimensions"),
    ({"model": "m", "input": "x", "dimensions": True}, "dimensions"),
    ({"model": "m", "input": "x", "dimensions": 10**9}, "dimensions"),
    ({"model": "m", "input": "x", "user": 3}, "user"),
])
def test_bad_input_names_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_embedding_request(orjson.dumps(body))
    assert e.value.param == param and e.value.status == 400
    assert set(orjson.loads(e.value.to_json())["error"]) == {"message", "type", "param", "code"}


def test_the_input_limit_is_openais() -> None:
    assert len(parsed(model="m", input=["x"] * MAX_INPUTS).input) == MAX_INPUTS == 2048
    assert len(parsed(model="m", input=list(range(5000))).input[0]) == 5000  # one array


def test_base64_is_little_endian_float32() -> None:
    values = [0.5, -1.25, 3.0]
    raw = struct.pack("<3f", *values)
    as_float, as_b64 = (reply_body([raw], "m", 4, fmt)["data"][0]["embedding"]
                        for fmt in ("float", "base64"))
    assert as_float == values
    assert list(struct.unpack("<3f", base64.b64decode(as_b64))) == values
    body = reply_body([raw, raw], "m", 4, "float")
    assert body["object"] == "list" and body["model"] == "m"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}


def test_tokens_are_counted_per_input_with_the_models_tokenizer() -> None:
    req = parsed(model="m", input=["hello world", "embeddings"])
    enc = tokens.encoding("cl100k_base")
    assert tokens.count_inputs(req, "text-embedding-3-small") == (
        len(enc.encode_ordinary("hello world")) + len(enc.encode_ordinary("embeddings")))
    assert tokens.count_inputs(parsed(model="m", input=[[1, 2], [3]]), "x") == 3
    assert tokens.decode(enc.encode_ordinary("hello world")) == "hello world"
    with pytest.raises(ValueError):
        tokens.decode([2**30])


ROUTES = {
    "models": {
        "emb": {"deployments": [{"provider": "openai", "model": "text-embedding-3-large",
                                 "api_key": "k"}]},
        "ada": {"deployments": [{"provider": "openai", "model": "text-embedding-ada-002",
                                 "api_key": "k"}]},
        "house-embed": {"deployments": [{"provider": "openai", "model": "nomic-embed-text",
                                         "api_base": "http://h/v1", "api_key": "k"}]},
        "compatible": {"deployments": [{"provider": "openai", "model": "some-model",
                                        "api_base": "http://h/v1", "api_key": "k"}]},
        "gpt": {"deployments": [{"provider": "openai", "model": "gpt-4o", "api_key": "k"}]},
        "claude": {"deployments": [{"provider": "anthropic", "model": "claude-haiku-4-5",
                                    "api_key": "k"}]},
        "local": {"deployments": [{"provider": "local", "model": "smollm2-135m"}]},
        "local-embed": {"deployments": [{"provider": "local", "model": "all-MiniLM-L6-v2"}]},
    },
}


@pytest.mark.parametrize(("alias", "chat", "embeddings", "dims", "shortens"), [
    ("emb", False, True, 3072, True),
    ("ada", False, True, 1536, False),
    ("house-embed", False, True, None, False),  # "embed" in its name
    ("compatible", True, True, None, False),  # its server decides
    ("gpt", True, False, None, False),  # priced for output
    ("claude", True, False, None, False),
    ("local", True, False, None, False),
    ("local-embed", False, True, 384, False),
])
def test_which_models_answer_which_endpoint(alias: str, chat: bool, embeddings: bool,
                                            dims: int | None, shortens: bool) -> None:
    routes = Routes(parse(ROUTES, env={}), Router({}))
    serves = routes.resolve(alias).serves
    assert (serves.no_chat is None, serves.no_embeddings is None) == (chat, embeddings)
    assert (serves.dimensions, serves.shortens) == (dims, shortens)
    releases = Releases()
    for choose, allowed in ((lambda: routes.choose(alias, None, None, False, releases), chat),
                            (lambda: routes.choose_embeddings(alias, None, None, releases),
                             embeddings)):
        if allowed:
            choose()
        else:
            with pytest.raises(InvalidRequest) as e:
                choose()
            assert e.value.param == "model" and e.value.code == "model_not_supported"
    assert {a: routes.dimensions_of(a) for a in ROUTES["models"]} == {  # type: ignore[attr-defined]
        "emb": 3072, "ada": 1536, "house-embed": None, "compatible": None, "gpt": None,
        "claude": None, "local": None, "local-embed": 384}


@pytest.mark.parametrize(("alias", "asked", "ok"), [
    ("emb", None, True), ("emb", 3072, True), ("emb", 256, True), ("emb", 3073, False),
    ("ada", 1536, True), ("ada", 512, False), ("local-embed", 384, True),
    ("local-embed", 128, False), ("compatible", 12345, True),  # unknown: upstream decides
])
def test_dimensions_within_what_the_model_gives(alias: str, asked: int | None,
                                                ok: bool) -> None:
    serves = Routes(parse(ROUTES, env={}), Router({})).resolve(alias).serves
    if ok:
        serves.check_dimensions(asked, alias)
    else:
        with pytest.raises(InvalidRequest) as e:
            serves.check_dimensions(asked, alias)
        assert e.value.param == "dimensions"


def test_the_simulators_vectors_are_deterministic_and_shorten_like_openais() -> None:
    spec = spec_of(parsed(model="text-embedding-3-small", input="x"))
    assert (spec.size, spec.dimensions) == (1536, 1536)
    full = struct.unpack("<1536f", vector("text-embedding-3-small", "x", 1536, 1536))
    again = struct.unpack("<1536f", vector("text-embedding-3-small", "x", 1536, 1536))
    short = struct.unpack("<8f", vector("text-embedding-3-small", "x", 1536, 8))
    assert full == again and sum(v * v for v in full) == pytest.approx(1.0, abs=1e-5)
    scale = sum(v * v for v in full[:8]) ** -0.5
    assert short == pytest.approx([v * scale for v in full[:8]], rel=1e-5)
    assert vector("text-embedding-3-small", "y", 1536, 8) != vector(
        "text-embedding-3-small", "x", 1536, 8)
    assert spec_of(parsed(model="text-embedding-3-large", input="x")).size == 3072
    with pytest.raises(BadRequest):
        spec_of(parsed(model="text-embedding-ada-002", input="x", dimensions=8))
    with pytest.raises(BadRequest):
        spec_of(parsed(model="text-embedding-3-small", input="x", dimensions=2000))
