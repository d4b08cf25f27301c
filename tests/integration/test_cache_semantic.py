"""The semantic cache through running gateways: a reworded question is served the
earlier answer; a question that differs in meaning, one about the present, or one
from another tenant is not; a fleet on one Redis shares its entries."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis.asyncio as aioredis

from tests.conftest import cache_config
from tests.helpers.admin import create_key
from tests.helpers.clients import openai_client
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.postgres import scratch_database, url_of
from tests.helpers.sim import SimHandle

MASTER = "master-" + os.urandom(8).hex()
REDIS_DB = "redis://127.0.0.1:6379/8"  # a database of its own, flushed around the test


def semantic_config(sim: SimHandle) -> dict[str, Any]:
    return cache_config(sim.url, semantic={"enabled": True})


@pytest.fixture(scope="module")
def gw_semantic(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway(semantic_config(sim), env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


def client(gw: GatewayHandle, key: str = MASTER) -> openai.AsyncOpenAI:
    return openai_client(gw.base_url, key)


async def ask(c: openai.AsyncOpenAI, question: str, system: str = "You help with accounts."
              ) -> tuple[str, str | None]:
    raw = await c.chat.completions.with_raw_response.create(
        model="sim", max_tokens=20, messages=[{"role": "system", "content": system},
                                             {"role": "user", "content": question}])
    return raw.parse().choices[0].message.content or "", raw.headers.get("x-tollway-cache")


async def test_a_reworded_question_gets_the_earlier_answer(gw_semantic: GatewayHandle,
                                                           fresh_sim: SimHandle) -> None:
    c = client(gw_semantic)
    system = "Support bot " + os.urandom(4).hex()  # a partition of this test's own
    answer, status = await ask(c, "How do I reset my password?", system)
    assert status == "miss"
    again, status = await ask(c, "How can I reset my password?", system)
    assert (again, status) == (answer, "semantic-hit")
    assert fresh_sim.stats()["requests"] == 1


async def test_different_meaning_present_time_or_context_is_not_served(
        gw_semantic: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(gw_semantic)
    system = "Support bot " + os.urandom(4).hex()
    await ask(c, "Please cancel my subscription.", system)
    await ask(c, "How do I convert 5 km to miles?", system)
    await ask(c, "What is the weather in Paris today?", system)
    assert (await ask(c, "Please don't cancel my subscription.", system))[1] == "miss"
    assert (await ask(c, "How do I convert 8 km to miles?", system))[1] == "miss"
    # About the present: never answered from the cache, not even word for word... by
    # meaning (the exact cache still serves the identical request).
    assert (await ask(c, "What's the weather in Paris today?", system))[1] == "miss"
    # The same question under another system prompt is another partition.
    assert (await ask(c, "Please cancel my subscription", "Another bot"))[1] == "miss"
    assert fresh_sim.stats()["requests"] == 7


async def test_near_repeats_hit_and_reversals_do_not(gw_semantic: GatewayHandle,
                                                      fresh_sim: SimHandle) -> None:
    c = client(gw_semantic)
    system = "Support bot " + os.urandom(4).hex()
    answer, status = await ask(c, "What is the tallest mountain in the world?", system)
    assert status == "miss"
    for again in ("what is the tallest mountain in the world",
                  "Tell me the tallest mountain in the world",
                  "  Can you please tell me: what's the tallest mountain in the world??"):
        assert await ask(c, again, system) == (answer, "semantic-hit"), again
    await ask(c, "How do I convert Celsius to Fahrenheit?", system)
    assert (await ask(c, "How do I convert Fahrenheit to Celsius?", system))[1] == "miss"
    await ask(c, "Is the pharmacy open at 7am?", system)
    assert (await ask(c, "Is the pharmacy open at 7pm?", system))[1] == "miss"
    assert fresh_sim.stats()["requests"] == 5


async def test_tenants_never_share_a_semantic_entry(gw_semantic: GatewayHandle,
                                                    fresh_sim: SimHandle) -> None:
    red, _ = create_key(gw_semantic.url, MASTER, team="red")
    red2, _ = create_key(gw_semantic.url, MASTER, team="red")
    blue, _ = create_key(gw_semantic.url, MASTER, team="blue")
    system = "Support bot " + os.urandom(4).hex()
    first, reworded = "How do I download my invoice?", "How can I download my invoice?"
    assert (await ask(client(gw_semantic, red), first, system))[1] == "miss"
    assert (await ask(client(gw_semantic, blue), reworded, system))[1] == "miss"
    assert (await ask(client(gw_semantic, red2), reworded, system))[1] == "semantic-hit"
    assert fresh_sim.stats()["requests"] == 2


@pytest.fixture(scope="module")
def fleet(sim: SimHandle) -> Iterator[list[GatewayHandle]]:
    async def flush() -> None:
        r = aioredis.from_url(REDIS_DB)
        await r.flushdb()
        await r.aclose()

    asyncio.run(flush())
    with scratch_database("tollway_cache_fleet") as name:
        cfg = semantic_config(sim)
        cfg["store"] = {"redis_url": REDIS_DB, "postgres_url": url_of(name)}
        handles: list[GatewayHandle] = []
        try:
            for _ in range(2):
                handles.append(start_gateway(cfg))
            yield handles
        finally:
            for h in handles:
                h.stop()
            asyncio.run(flush())


async def written(pattern: str) -> None:
    """Wait until the shared Redis holds a key matching `pattern`: the write behind an
    answer lands a moment after the answer (polled: no event crosses processes)."""
    r = aioredis.from_url(REDIS_DB)
    try:
        for _ in range(500):
            async for _key in r.scan_iter(match=pattern):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"nothing matching {pattern} was written")
    finally:
        await r.aclose()


async def test_a_fleet_shares_its_cache(fleet: list[GatewayHandle],
                                        fresh_sim: SimHandle) -> None:
    one, two = (client(h) for h in fleet)
    answer, status = await ask(one, "How do I update my billing address?")
    assert status == "miss"
    await written("tw:v1:{c}:e:*")
    await written("tw:v1:{c}:s:*")
    assert await ask(two, "How do I update my billing address?") == (answer, "hit")
    assert await ask(two, "How can I update my billing address?") == (answer, "semantic-hit")
    assert fresh_sim.stats()["requests"] == 1
