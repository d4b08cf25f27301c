"""The embedded default: no config, no keys — the bundled SmolLM2 model answers."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import openai
import orjson
import pytest

from tests.helpers.clients import track
from tests.helpers.gateway import GatewayHandle, start_gateway


@pytest.fixture(scope="module")
def embedded() -> Iterator[GatewayHandle]:
    handle = start_gateway(None)  # no config file, no provider keys in the environment
    try:
        yield handle
    finally:
        handle.stop()


def greedy_local_answer(question: str, max_tokens: int) -> str:
    """The same model run directly with llama.cpp: greedy decoding is deterministic,
    so the gateway's stream must reproduce it token for token."""
    from llama_cpp import Llama

    from tollway.providers.local import bundled_model_path

    llm = Llama(model_path=str(bundled_model_path()), n_ctx=2048, verbose=False)
    out = llm.create_chat_completion(messages=[{"role": "user", "content": question}],
                                     max_tokens=max_tokens, temperature=0, seed=1)
    return str(out["choices"][0]["message"]["content"])


def generated(gw: GatewayHandle) -> int:
    """Pieces the local model has generated since the gateway started (/health/ready)."""
    with urllib.request.urlopen(f"{gw.url}/health/ready", timeout=10) as r:
        return int(orjson.loads(r.read())["providers"]["local/smollm2-135m"]["generated"])


def client(gw: GatewayHandle) -> openai.AsyncOpenAI:
    return track(openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0,
                                    timeout=120))


async def test_embedded_default_lists_local_models(embedded: GatewayHandle) -> None:
    ids = sorted([m.id async for m in client(embedded).models.list()])
    assert ids == ["default", "local", "local-embed"]


def test_ready_reports_the_local_model(embedded: GatewayHandle) -> None:
    with urllib.request.urlopen(f"{embedded.url}/health/ready", timeout=10) as r:
        report = orjson.loads(r.read())
    assert report["ready"] is True
    local = report["providers"]["local/smollm2-135m"]
    assert local["ok"] and local["model_path"].endswith(".gguf")
    assert report["providers"]["local/all-MiniLM-L6-v2"]["ok"]


async def test_streamed_completion_is_generated_by_the_local_model(
        embedded: GatewayHandle) -> None:
    stream = await client(embedded).chat.completions.create(
        model="default", stream=True, max_tokens=24, temperature=0, seed=1,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    parts, usage, finish = [], None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for ch in chunk.choices:
            parts.append(ch.delta.content or "")
            finish = ch.finish_reason or finish
    text = "".join(parts)
    assert text == greedy_local_answer("What is the capital of France?", 24)
    assert finish in ("stop", "length")
    assert usage is not None and usage.prompt_tokens > 10
    assert 0 < usage.completion_tokens <= 24


async def test_json_completion_respects_max_tokens(embedded: GatewayHandle) -> None:
    raw = await client(embedded).chat.completions.with_raw_response.create(
        model="local", max_tokens=5, temperature=0,
        messages=[{"role": "user", "content": "Write a long poem about the sea."}])
    r = raw.parse()
    assert raw.headers["x-tollway-model"] == "smollm2-135m"
    assert raw.headers["x-tollway-provider"] == "local"
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens <= 6
    assert r.choices[0].message.content


async def test_unsupported_tools_get_a_clear_400(embedded: GatewayHandle) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        await client(embedded).chat.completions.create(
            model="local", messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert "does not support tools" in e.value.message


async def test_closing_a_stream_stops_local_generation(embedded: GatewayHandle) -> None:
    """The model has one thread, so the next request runs only once the abandoned
    stream's generation has ended: by then it must have made a few pieces, not ~1,900."""
    c = client(embedded)
    before = generated(embedded)
    stream = await c.chat.completions.create(
        model="local", stream=True, max_tokens=1900, temperature=1.0,
        messages=[{"role": "user", "content": "Write a very long story about dragons."}])
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.close()
    r = await c.chat.completions.create(
        model="local", max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].message.content is not None
    assert generated(embedded) - before < 100
