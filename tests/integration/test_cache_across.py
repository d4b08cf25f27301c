"""Context-free questions across conversations, through a running gateway: an FAQ
asked at turn 4 of one conversation is served the answer given at turn 0 of another
(exactly, and reworded by meaning; on by default), a turn that points back is not, nor
one that leans on the turns before it by meaning, an alias without
`across_conversations` keeps today's partitioning, and tenants never share."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import cache_config
from tests.helpers.admin import create_key
from tests.helpers.clients import openai_client
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle

MASTER = "master-" + os.urandom(8).hex()
FAQ = "How do I reset my password?"
EARLIER = ["Hi there!", "My parcel hasn't arrived yet.", "It's order 58213.",
           "Okay, thanks for checking."]


@pytest.fixture(scope="module")
def gw(sim: SimHandle) -> Iterator[GatewayHandle]:
    cfg: dict[str, Any] = cache_config(sim.url, semantic={"enabled": True})
    models = cfg["models"]
    models["sim-solo"] = copy.deepcopy(models["sim"])
    models["sim-solo"]["cache"] = {"across_conversations": False}  # the old partitioning
    handle = start_gateway(cfg, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


def conversation(system: str, earlier: list[str], latest: str) -> list[dict[str, str]]:
    out = [{"role": "system", "content": system}]
    for i, text in enumerate(earlier):
        out += [{"role": "user", "content": text},
                {"role": "assistant", "content": f"(answer {i} to: {text})"}]
    return [*out, {"role": "user", "content": latest}]


async def ask(c: openai.AsyncOpenAI, messages: list[dict[str, str]], model: str = "sim"
              ) -> tuple[str, str | None, str | None]:
    raw = await c.chat.completions.with_raw_response.create(
        model=model, max_tokens=20, messages=messages)  # type: ignore[arg-type]
    return (raw.parse().choices[0].message.content or "", raw.headers.get("x-tollway-cache"),
            raw.headers.get("x-tollway-cost-usd"))


async def test_an_faq_mid_conversation_is_served_another_conversations_answer(
        gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = openai_client(gw.base_url, MASTER)
    system = "Support bot " + os.urandom(4).hex()  # a partition of this test's own
    answer, status, cost = await ask(c, conversation(system, [], FAQ))
    assert status == "miss" and cost is not None and float(cost) > 0
    # Turn 4 of another conversation: the same question, the same answer, free.
    assert await ask(c, conversation(system, EARLIER, FAQ)) == (answer, "hit", "0")
    # Reworded at turn 2 of a third: found by meaning in the same partition.
    again, status, cost = await ask(c, conversation(system, EARLIER[:2],
                                                    "How can I reset my password?"))
    assert (again, status, cost) == (answer, "semantic-hit", "0")
    assert fresh_sim.stats()["requests"] == 1


async def test_a_turn_that_points_back_is_not_shared(gw: GatewayHandle,
                                                     fresh_sim: SimHandle) -> None:
    c = openai_client(gw.base_url, MASTER)
    system = "Support bot " + os.urandom(4).hex()
    follow = "and how do I change it?"
    assert (await ask(c, conversation(system, ["Where do I see my email address?"],
                                      follow)))[1] == "miss"
    assert (await ask(c, conversation(system, ["I don't like my username."],
                                      follow)))[1] == "miss"
    assert (await ask(c, conversation(system, EARLIER, follow)))[1] == "miss"
    # Nor as a first turn somewhere, then later in a conversation.
    assert (await ask(c, conversation(system, [], "Is that free?")))[1] == "miss"
    assert (await ask(c, conversation(system, EARLIER, "Is that free?")))[1] == "miss"
    assert fresh_sim.stats()["requests"] == 5


async def test_a_turn_about_what_was_just_said_is_not_shared(gw: GatewayHandle,
                                                             fresh_sim: SimHandle) -> None:
    # No word points back, but "a replacement" is of what the user just named.
    c = openai_client(gw.base_url, MASTER)
    system = "Support bot " + os.urandom(4).hex()
    latest = "How do I get a replacement?"
    for earlier in (["My charger stopped working."], ["I lost my membership card."]):
        assert (await ask(c, conversation(system, earlier, latest)))[1] == "miss"
    assert fresh_sim.stats()["requests"] == 2


async def test_an_alias_without_it_keeps_conversations_apart(gw: GatewayHandle,
                                                             fresh_sim: SimHandle) -> None:
    c = openai_client(gw.base_url, MASTER)
    system = "Support bot " + os.urandom(4).hex()
    assert (await ask(c, conversation(system, [], FAQ), "sim-solo"))[1] == "miss"
    assert (await ask(c, conversation(system, EARLIER, FAQ), "sim-solo"))[1] == "miss"
    assert fresh_sim.stats()["requests"] == 2


async def test_tenants_never_share_across_conversations(gw: GatewayHandle,
                                                        fresh_sim: SimHandle) -> None:
    red, _ = create_key(gw.url, MASTER, team="red")
    red2, _ = create_key(gw.url, MASTER, team="red")
    blue, _ = create_key(gw.url, MASTER, team="blue")
    system = "Support bot " + os.urandom(4).hex()
    answer, status, _ = await ask(openai_client(gw.base_url, red), conversation(system, [], FAQ))
    assert status == "miss"
    assert (await ask(openai_client(gw.base_url, blue),
                      conversation(system, EARLIER, FAQ)))[1] == "miss"
    got = await ask(openai_client(gw.base_url, red2), conversation(system, EARLIER, FAQ))
    assert got == (answer, "hit", "0")
    assert fresh_sim.stats()["requests"] == 2
