"""The response cache through a running gateway, with the official SDK: exact hits
(JSON and streamed), what makes a request different, per-request controls, tenant
isolation, the ledger's record of a hit, a restart, and a dead cache store."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from tests.conftest import cache_config
from tests.helpers.admin import create_key, ledger_rows
from tests.helpers.clients import openai_client
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle

MASTER = "master-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def gw_cache(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway(cache_config(sim.url), env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


def client(gw: GatewayHandle, key: str = MASTER) -> openai.AsyncOpenAI:
    return openai_client(gw.base_url, key)


def unique(text: str) -> list[dict[str, str]]:
    # A fresh question per test: the module's gateway keeps its cache between tests.
    return [{"role": "user", "content": f"{text} ({os.urandom(4).hex()})"}]


async def ask(c: openai.AsyncOpenAI, messages: list[dict[str, str]], **kw: Any
              ) -> tuple[str, str | None, Any]:
    raw = await c.chat.completions.with_raw_response.create(
        model="sim", messages=messages, max_tokens=20, **kw)  # type: ignore[arg-type]
    done = raw.parse()
    return done.choices[0].message.content or "", raw.headers.get("x-tollway-cache"), raw


async def ask_stream(c: openai.AsyncOpenAI, messages: list[dict[str, str]], **kw: Any
                     ) -> tuple[str, str | None, int]:
    raw = await c.chat.completions.with_raw_response.create(
        model="sim", messages=messages, max_tokens=20, stream=True,  # type: ignore[arg-type]
        **kw)
    text, chunks = [], 0
    async for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
            chunks += 1
    return "".join(text), raw.headers.get("x-tollway-cache"), chunks


def calls(sim: SimHandle) -> int:
    return int(sim.stats()["requests"])


async def test_the_second_identical_request_is_served_from_the_cache(
        gw_cache: GatewayHandle, fresh_sim: SimHandle) -> None:
    c, msgs = client(gw_cache), unique("What is a cache?")
    first, status1, raw1 = await ask(c, msgs)
    second, status2, raw2 = await ask(c, msgs)
    assert (status1, status2) == ("miss", "hit")
    assert second == first and first
    assert calls(fresh_sim) == 1
    assert raw2.headers["x-tollway-cost-usd"] == "0"
    assert float(raw2.headers["x-tollway-saved-usd"]) == float(raw1.headers["x-tollway-cost-usd"])
    assert raw2.headers["x-tollway-provider"] == "cache"
    assert raw2.parse().id != raw1.parse().id  # a fresh id per answer
    # The ledger: the hit cost nothing and saved what the miss cost.
    rows = {r["request_id"]: r for r in ledger_rows(gw_cache.url, MASTER)}
    miss, hit = rows[raw1.headers["x-request-id"]], rows[raw2.headers["x-request-id"]]
    assert (miss["cache"], hit["cache"]) == ("miss", "hit")
    assert hit["cost_usd"] == 0 and hit["input_tokens"] == hit["output_tokens"] == 0
    assert hit["saved_usd"] == pytest.approx(miss["cost_usd"]) and miss["cost_usd"] > 0


async def test_streams_are_cached_and_replayed_in_word_sized_chunks(
        gw_cache: GatewayHandle, fresh_sim: SimHandle) -> None:
    c, msgs = client(gw_cache), unique("Tell me a story")
    first, status1, _ = await ask_stream(c, msgs)
    second, status2, chunks = await ask_stream(c, msgs)
    assert (status1, status2) == ("miss", "hit")
    assert second == first and len(first.split()) > 3
    assert chunks >= len(first.split())  # streamed word by word, not in one piece
    # A streamed answer serves a JSON request too, and the other way round.
    as_json, status3, _ = await ask(c, msgs)
    assert (as_json, status3) == (first, "hit")
    msgs2 = unique("Another story")
    json_first, _, _ = await ask(c, msgs2)
    streamed, status4, _ = await ask_stream(c, msgs2, stream_options={"include_usage": True})
    assert (streamed, status4) == (json_first, "hit")
    assert calls(fresh_sim) == 2


async def test_any_difference_in_the_request_misses(
        gw_cache: GatewayHandle, fresh_sim: SimHandle) -> None:
    c, msgs = client(gw_cache), unique("Same words")
    await ask(c, msgs)
    variants: list[tuple[list[dict[str, str]], dict[str, Any]]] = [
        ([{"role": "system", "content": "You are terse."}, *msgs], {}),
        ([{"role": "system", "content": "You are verbose."}, *msgs], {}),
        ([{"role": "user", "content": "Earlier turn"}, {"role": "assistant", "content": "ok"},
          *msgs], {}),
        (msgs, {"temperature": 0.2}),
        (msgs, {"top_p": 0.5}),
        (msgs, {"seed": 7}),
        (msgs, {"stop": ["\n"]}),
        (msgs, {"response_format": {"type": "json_object"}}),
        (msgs, {"extra_headers": {"x-tollway-cache-namespace": "prompt-v2"}}),
    ]
    for messages, kw in variants:
        _, status, _ = await ask(c, messages, **kw)
        assert status == "miss", (messages, kw)
    raw = await c.chat.completions.with_raw_response.create(model="sim", messages=msgs,  # type: ignore[arg-type]
                                                            max_tokens=21)
    assert raw.headers["x-tollway-cache"] == "miss"  # max_tokens is part of the key
    assert calls(fresh_sim) == 1 + len(variants) + 1
    # ...and each variant is now cached under its own key.
    for messages, kw in variants:
        assert (await ask(c, messages, **kw))[1] == "hit"


async def test_request_controls(gw_cache: GatewayHandle, fresh_sim: SimHandle) -> None:
    c, msgs = client(gw_cache), unique("Controls")
    no_store = {"extra_headers": {"cache-control": "no-store"}}
    assert (await ask(c, msgs, **no_store))[1] == "bypass"
    assert (await ask(c, msgs))[1] == "miss"  # no-store stored nothing
    assert (await ask(c, msgs))[1] == "hit"
    assert (await ask(c, msgs, **no_store))[1] == "bypass"  # and is never served
    # no-cache: not served from the cache, but the fresh answer replaces the old one.
    assert (await ask(c, msgs, extra_headers={"cache-control": "no-cache"}))[1] == "miss"
    assert calls(fresh_sim) == 4  # bypass, miss, bypass, refresh
    # A high temperature asks for variety: not cached, unless forced.
    hot = unique("Be creative")
    assert (await ask(c, hot, temperature=1.2))[1] == "bypass"
    assert (await ask(c, hot, temperature=1.2))[1] == "bypass"
    force = {"extra_headers": {"x-tollway-cache": "force"}}
    assert (await ask(c, hot, temperature=1.2, **force))[1] == "miss"
    assert (await ask(c, hot, temperature=1.2, **force))[1] == "hit"
    # A bad control is the caller's mistake, said so.
    with pytest.raises(openai.BadRequestError, match="x-tollway-cache-ttl"):
        await ask(c, msgs, extra_headers={"x-tollway-cache-ttl": "soon"})


async def test_tenants_never_share_an_entry(gw_cache: GatewayHandle,
                                            fresh_sim: SimHandle) -> None:
    red, _ = create_key(gw_cache.url, MASTER, team="red")
    red2, _ = create_key(gw_cache.url, MASTER, team="red")
    blue, _ = create_key(gw_cache.url, MASTER, team="blue")
    loner, _ = create_key(gw_cache.url, MASTER)  # no team: a tenant of its own
    msgs = unique("Our quarterly numbers")
    assert (await ask(client(gw_cache, red), msgs))[1] == "miss"
    assert (await ask(client(gw_cache, red2), msgs))[1] == "hit"  # same team: shared
    assert (await ask(client(gw_cache, blue), msgs))[1] == "miss"
    assert (await ask(client(gw_cache, loner), msgs))[1] == "miss"
    assert (await ask(client(gw_cache, MASTER), msgs))[1] == "miss"
    assert calls(fresh_sim) == 4


async def test_the_cache_survives_a_restart(sim: SimHandle, fresh_sim: SimHandle,
                                            tmp_path: Any) -> None:
    cfg = cache_config(sim.url)
    cfg["store"] = {"path": str(tmp_path / "store")}
    msgs = unique("Remember me")
    first = start_gateway(cfg)
    try:
        answer, status, _ = await ask(client(first), msgs)
        assert status == "miss"
    finally:
        first.stop()  # a graceful stop: the write behind the answer is finished
    second = start_gateway(cfg)
    try:
        again, status, _ = await ask(client(second), msgs)
        assert (again, status) == (answer, "hit")
    finally:
        second.stop()
    assert calls(fresh_sim) == 1


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers: the worst cache store."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in held:
            w.close()


async def test_a_dead_cache_store_fails_open(sim: SimHandle, fresh_sim: SimHandle) -> None:
    async with black_hole() as port:
        cfg = cache_config(sim.url, redis_url=f"redis://127.0.0.1:{port}/0", timeout_ms=30)
        handle = start_gateway(cfg)
        try:
            c = client(handle)
            statuses = [(await ask(c, unique("Still working?")))[1] for _ in range(12)]
            metrics = await asyncio.to_thread(handle.metrics)
        finally:
            handle.stop()
    assert statuses == ["miss"] * 12  # every request answered, by the upstream
    assert calls(fresh_sim) == 12
    # After three failures in a row the store is left alone (for 5 s): the other
    # requests did not wait for it at all. (A fourth call may have been in flight.)
    line = next(x for x in metrics.splitlines()
                if x.startswith('tollway_store_errors_total{part="cache"}'))
    assert 3 <= float(line.split()[-1]) <= 4
