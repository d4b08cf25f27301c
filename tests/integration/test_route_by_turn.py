"""Routing on the latest turn, through a real gateway in front of the simulator with the
official openai SDK: an app asking for plain `gpt-4o` gets its acknowledgements, easy
FAQs and long-output abuse answered by the cheap tier, however long the conversation,
and its real questions by gpt-4o; the reply headers say which tier and why; a tier
asked for wins."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle

SYSTEM = "You are Acme's support assistant. Be brief and friendly. " * 120  # ~1,400 tokens


def sim_dep(sim: SimHandle, model: str) -> dict[str, object]:
    return {"provider": "openai", "model": model, "api_base": f"{sim.url}/v1", "api_key": "k"}


@pytest.fixture(scope="module")
def gw_turns(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway({
        "models": {
            "gpt-4o": {"deployments": [sim_dep(sim, "gpt-4o")],
                       "route_by_turn": {"cheap_tier": "mini"}},
            "gpt-4o-mini": {"deployments": [sim_dep(sim, "gpt-4o-mini")]},
        },
        "tiers": {"mini": {"model": "gpt-4o-mini", "max_tokens": 256},
                  "strong": {"model": "gpt-4o"}},
    })
    try:
        yield handle
    finally:
        handle.stop()


def client(gw: GatewayHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=30)


def conversation(latest: str, *, hard: bool = False) -> list[dict[str, Any]]:
    """Turn 5 of a support chat with a long system prompt; `hard`: an earlier answer
    held code."""
    msgs: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for i in range(4):
        msgs.append({"role": "user", "content": f"where is my order number {1000 + i}?"})
        answer = ("It shipped yesterday and arrives on Friday. " * 6 if not (hard and i == 2)
                  else "Use this:\n```python\nclient.orders.get(id)\n```")
        msgs.append({"role": "assistant", "content": answer})
    msgs.append({"role": "user", "content": latest})
    return msgs


async def ask(gw: GatewayHandle, latest: str, **kw: Any) -> Any:
    hard = kw.pop("hard", False)
    model = kw.pop("model", "gpt-4o")
    return await client(gw).chat.completions.with_raw_response.create(
        model=model, messages=conversation(latest, hard=hard), **kw)


async def test_thanks_at_turn_five_goes_to_the_cheap_tier(gw_turns: GatewayHandle,
                                                         fresh_sim: SimHandle) -> None:
    raw = await ask(gw_turns, "thanks!")
    h = raw.headers
    assert (h["x-tollway-model"], h["x-tollway-tier"]) == ("gpt-4o-mini", "mini")
    assert (h["x-tollway-downgraded-from"], h["x-tollway-downgrade-reason"]) == (
        "gpt-4o", "latest_turn")
    assert h["x-tollway-route-reason"] == "acknowledgement"
    assert int(h["x-tollway-input-tokens"]) > 1000  # a long input all the same
    assert raw.parse().choices[0].message.content
    # Even after a hard turn, an acknowledgement needs no big model.
    raw = await ask(gw_turns, "ok got it, thanks a lot 👍", hard=True)
    assert raw.headers["x-tollway-model"] == "gpt-4o-mini"
    assert fresh_sim.stats()["requests_by_model"] == {"gpt-4o-mini": 2}


async def test_a_real_question_stays_on_the_strong_model(gw_turns: GatewayHandle,
                                                         fresh_sim: SimHandle) -> None:
    raw = await ask(gw_turns, "explain why I was charged twice for the same order")
    h = raw.headers
    assert h["x-tollway-model"] == "gpt-4o"
    assert h["x-tollway-route-reason"] == "reasoning"
    assert "x-tollway-downgraded-from" not in h and "x-tollway-tier" not in h
    # A follow-up in a conversation that already needed code stays strong too.
    raw = await ask(gw_turns, "and the other one?", hard=True)
    assert (raw.headers["x-tollway-model"], raw.headers["x-tollway-route-reason"]) == (
        "gpt-4o", "follow_up")


async def test_a_question_of_its_own_after_a_hard_turn_is_judged_alone(
        gw_turns: GatewayHandle, fresh_sim: SimHandle) -> None:
    """A conversation that needed code keeps its follow-ups strong, but an FAQ asked
    after it is not about that code: it goes where it would at the start."""
    raw = await ask(gw_turns, "Is there a Linux app?", hard=True)
    assert (raw.headers["x-tollway-model"], raw.headers["x-tollway-route-reason"]) == (
        "gpt-4o-mini", "simple_question")
    # Words pointing back: a follow-up.
    raw = await ask(gw_turns, "Is there a Linux app for it?", hard=True)
    assert (raw.headers["x-tollway-model"], raw.headers["x-tollway-route-reason"]) == (
        "gpt-4o", "follow_up")
    # No words pointing back, but about what was just discussed: a follow-up too.
    raw = await ask(gw_turns, "how can I check where my order is?", hard=True)
    assert (raw.headers["x-tollway-model"], raw.headers["x-tollway-route-reason"]) == (
        "gpt-4o", "follow_up")
    assert fresh_sim.stats()["requests_by_model"] == {"gpt-4o-mini": 1, "gpt-4o": 2}


async def test_open_turns_go_to_the_classifier(gw_turns: GatewayHandle,
                                               fresh_sim: SimHandle) -> None:
    raw = await ask(gw_turns, "ship to canada?")
    assert (raw.headers["x-tollway-model"], raw.headers["x-tollway-route-reason"]) == (
        "gpt-4o-mini", "classifier")
    raw = await ask(gw_turns, "do you ship to Canada?")  # a plain how-to question: the rules
    assert (raw.headers["x-tollway-model"], raw.headers["x-tollway-route-reason"]) == (
        "gpt-4o-mini", "simple_question")
    raw = await ask(gw_turns, "someone placed an order with my card that I don't recognise")
    assert (raw.headers["x-tollway-model"], raw.headers["x-tollway-route-reason"]) == (
        "gpt-4o", "classifier")


async def test_long_output_abuse_goes_cheap_under_the_tier_cap(gw_turns: GatewayHandle,
                                                               fresh_sim: SimHandle) -> None:
    raw = await ask(gw_turns, "repeat the previous text 100 times", max_tokens=4000,
                    stream=True)
    h = raw.headers
    assert (h["x-tollway-model"], h["x-tollway-route-reason"]) == ("gpt-4o-mini", "long_output")
    assert h["x-tollway-max-tokens-clamped"] == "tier"
    chunks = [c async for c in raw.parse()]
    assert chunks and fresh_sim.stats()["requests_by_model"] == {"gpt-4o-mini": 1}


async def test_a_tier_asked_for_wins(gw_turns: GatewayHandle, fresh_sim: SimHandle) -> None:
    raw = await ask(gw_turns, "thanks!", extra_headers={"x-tollway-tier": "strong"})
    h = raw.headers
    assert (h["x-tollway-model"], h["x-tollway-tier"]) == ("gpt-4o", "strong")
    assert "x-tollway-downgraded-from" not in h and "x-tollway-route-reason" not in h
    raw = await ask(gw_turns, "thanks!", model="tier:strong")
    assert raw.headers["x-tollway-model"] == "gpt-4o"
    # And the cheap model asked for by name is simply served.
    raw = await ask(gw_turns, "explain why", model="gpt-4o-mini")
    assert raw.headers["x-tollway-model"] == "gpt-4o-mini"
    assert "x-tollway-route-reason" not in raw.headers
