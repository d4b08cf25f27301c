"""A client that goes away mid-stream stops the upstream generation at once."""

from __future__ import annotations

import time

import aiohttp

from tests.helpers.gateway import GatewayHandle
from tests.helpers.sim import SimHandle

REQUESTED_TOKENS = 200


async def test_client_disconnect_mid_stream_cancels_upstream_within_a_second(
        gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    fresh_sim.config(token_ms=20, output_tokens=REQUESTED_TOKENS)
    body = {"model": "sim", "stream": True, "max_tokens": REQUESTED_TOKENS,
            "messages": [{"role": "user", "content": "tell me a long story"}]}
    async with aiohttp.ClientSession() as s:
        resp = await s.post(f"{gw.base_url}/chat/completions", json=body)
        assert resp.status == 200
        frames = 0
        async for line in resp.content:
            if line.startswith(b"data: {"):
                frames += 1
            if frames == 5:
                break
        # Drop the connection the way a closed browser tab does.
        resp.connection.transport.abort()  # type: ignore[union-attr]
        resp.close()
        closed_at = time.time()
    stats = fresh_sim.wait_for(lambda st: st["streams_cancelled"] >= 1, timeout=2)
    assert stats["last_cancel_at"] - closed_at < 1.0
    assert stats["streams_cancelled"] == 1
    assert stats["streams_completed"] == 0
    assert 4 <= stats["tokens_generated"] < REQUESTED_TOKENS // 2


async def test_sdk_closing_the_stream_cancels_upstream(gw: GatewayHandle,
                                                        fresh_sim: SimHandle) -> None:
    import openai

    fresh_sim.config(token_ms=20, output_tokens=REQUESTED_TOKENS)
    c = openai.AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    stream = await c.chat.completions.create(
        model="sim", stream=True, max_tokens=REQUESTED_TOKENS,
        messages=[{"role": "user", "content": "another long story"}])
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.close()
    closed_at = time.time()
    await c.close()
    stats = fresh_sim.wait_for(lambda st: st["streams_cancelled"] >= 1, timeout=2)
    assert stats["last_cancel_at"] - closed_at < 1.0
    assert stats["tokens_generated"] < REQUESTED_TOKENS // 2
