"""The cache in the gateway used as a library, with an injected clock: entries expire
on the gateway's clock, and the per-request TTL overrides the configured one."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.helpers.sim import SimHandle
from tollway import config
from tollway.accounting.settlement import Answered
from tollway.cache.controls import CacheAsk
from tollway.gateway import Gateway
from tollway.gateway.call import Asks, Call
from tollway.wire.openai import parse_chat_request


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def gw(sim: SimHandle, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Clock]]:
    clock = Clock(1_800_000_000.0)
    cfg = config.parse({
        "models": {"sim": {"deployments": [{"provider": "openai", "model": "sim-model",
                                            "api_base": sim.openai_base, "api_key": "k"}]}},
        "store": {"path": str(tmp_path / "store")},
        "cache": {"enabled": True, "ttl_seconds": 60},
    }, env={})
    gateway = Gateway(cfg, clock=clock)
    await gateway.start()
    try:
        yield gateway, clock
    finally:
        await gateway.close()


async def call(gw: Gateway, question: str, ask: CacheAsk | None = None) -> str | None:
    """One request; what the cache did with it (the write behind a miss finished)."""
    req = parse_chat_request(orjson.dumps({"model": "sim", "max_tokens": 10, "messages": [
        {"role": "user", "content": question}]}))
    c = Call("r-" + os.urandom(4).hex(), asks=Asks(cache=ask))
    answer = await gw.chat(c, req)
    await gw.finish(c, Answered(answer))
    assert gw.cache is not None
    await gw.cache.drain()
    return c.cache.status if c.cache is not None else None


async def test_entries_expire_on_the_gateways_clock(gw: tuple[Gateway, Clock],
                                                   fresh_sim: SimHandle) -> None:
    gateway, clock = gw
    assert await call(gateway, "q1") == "miss"
    clock.now += 59
    assert await call(gateway, "q1") == "hit"
    clock.now += 2  # 61 s after it was stored
    assert await call(gateway, "q1") == "miss"
    assert await call(gateway, "q1") == "hit"  # the fresh answer was stored
    assert fresh_sim.stats()["requests"] == 2


async def test_a_request_can_set_its_answers_ttl(gw: tuple[Gateway, Clock],
                                                 fresh_sim: SimHandle) -> None:
    gateway, clock = gw
    assert await call(gateway, "q2", CacheAsk(ttl=5)) == "miss"
    clock.now += 4
    assert await call(gateway, "q2") == "hit"
    clock.now += 2
    assert await call(gateway, "q2") == "miss"
    assert fresh_sim.stats()["requests"] == 2
