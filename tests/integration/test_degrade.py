"""Every change of model is made before the response cache, so an answer is cached under
the model that wrote it; and a conversation cap that fills degrades the turn (history
summarised harder, then the cheaper tier) before it refuses at the hard limit — against
a real gateway in front of `tollway simulate`, through the openai SDK."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import cache_config
from tests.helpers.clients import openai_client
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle

MAX_TOKENS = 20
CONV_CAP = 2000  # tokens per conversation


def config(sim_url: str) -> dict[str, Any]:
    cfg = cache_config(sim_url)
    cfg["models"]["sim-big"] = {"deployments": [  # type: ignore[index]
        {"provider": "openai", "model": "sim-model-big", "api_base": f"{sim_url}/v1",
         "api_key": "sim-key"}]}
    cfg["prices"] = {"sim-model": {"input": 1.0, "output": 2.0},
                     "sim-model-big": {"input": 10.0, "output": 20.0}}
    cfg["tiers"] = {"complex": {"model": "sim-big"}, "standard": {"model": "sim"},
                    "deep": {"model": "sim-big"}}
    # Short inputs asked of `complex` go to `standard`; `deep` is never moved.
    cfg["auto_downgrade"] = {"enabled": True, "max_input_tokens": 30, "to": "standard",
                             "never_from": ["deep"]}
    cfg["history"] = {"summary_max_tokens": MAX_TOKENS}
    cfg["budgets"] = {"conversations": [{"tokens": CONV_CAP, "period": "total"}],
                      "downgrade": [
                          {"at": 0.25, "scope": "conversation", "summarise_above": 80},
                          {"at": 0.5, "scope": "conversation", "from": "deep",
                           "to": "standard"}]}
    return cfg


@pytest.fixture(scope="module")
def gw(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway(config(sim.url))
    try:
        yield handle
    finally:
        handle.stop()


def question(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{text} ({os.urandom(4).hex()})"}]


async def ask(c: openai.AsyncOpenAI, model: str, messages: list[dict[str, str]],
              **headers: str) -> tuple[str, str | None, Any]:
    raw = await c.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
        extra_headers=headers or None)
    done = raw.parse()
    return done.model, raw.headers.get("x-tollway-cache"), raw


async def test_an_answer_is_cached_under_the_model_that_wrote_it(
        gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = openai_client(gw.base_url, "any")
    messages = question("What is a haiku?")
    # Asked of `complex`, answered by the cheap model (a short input).
    model, cache, raw = await ask(c, "tier:complex", messages)
    assert (model, cache, raw.headers["x-tollway-downgraded-from"]) == (
        "sim-model", "miss", "complex")
    # The strong model, asked the same: not served the cheap model's answer.
    model, cache, _ = await ask(c, "sim-big", messages)
    assert (model, cache) == ("sim-model-big", "miss")
    # And vice versa: the downgraded request is not served the strong model's answer —
    # it hits the cheap model's own, as does the cheap model asked by name.
    model, cache, raw = await ask(c, "tier:complex", messages)
    assert (model, cache, raw.headers["x-tollway-downgraded-from"]) == (
        "sim-model", "hit", "complex")
    assert (await ask(c, "sim", messages))[:2] == ("sim-model", "hit")
    # A tier that is never moved is answered, then hit, by the strong model.
    assert (await ask(c, "tier:deep", messages))[:2] == ("sim-model-big", "hit")
    assert fresh_sim.stats()["requests"] == 2


async def test_a_filling_conversation_cap_degrades_before_it_refuses(
        gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    fresh_sim.config(output_tokens=MAX_TOKENS)
    c = openai_client(gw.base_url, "any")
    conv = {"x-tollway-conversation-id": f"degrade-{os.urandom(4).hex()}",
            "x-tollway-cache": "off"}
    history: list[dict[str, str]] = []
    seen: list[tuple[str, str | None, str | None]] = []
    refusal: openai.RateLimitError | None = None
    for turn in range(60):
        history += [{"role": "user", "content": f"Tell me about item number {turn}, please."}]
        try:
            model, _, raw = await ask(c, "tier:deep", history, **conv)
        except openai.RateLimitError as e:
            refusal = e
            break
        h = raw.headers
        seen.append((model, h.get("x-tollway-degraded"), h.get("x-tollway-downgraded-from")))
        if h.get("x-tollway-degraded"):
            assert h["x-tollway-degrade-budget"].startswith("conversation tokens budget ")
            assert h["x-tollway-history"] == "summarise"
        history.append({"role": "assistant",
                        "content": raw.parse().choices[0].message.content or ""})
    # Each state in turn: the strong model as asked; the history summarised harder; the
    # cheaper tier as well; and only then the refusal, as any conversation cap refuses.
    states = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
    assert states == [("sim-model-big", None, None), ("sim-model-big", "history", None),
                      ("sim-model", "tier,history", "deep")]
    assert refusal is not None and refusal.status_code == 429
    err = refusal.body
    assert isinstance(err, dict) and err["code"] == "conversation_cap_exceeded"
    assert "has reached its cap" in err["message"]
    assert err["type"] and "param" in err
