"""Graceful shutdown (issue 17, item 3): on SIGTERM, streams under way finish if they can
within `server.drain_seconds`; one that cannot ends with an error event the SDK raises
(not a dropped connection), and every request has its ledger row; no traceback."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import gateway_config
from tests.helpers.gateway import start_gateway
from tests.helpers.sim import SimHandle
from tollway.store.embedded import EmbeddedStore

DRAIN_S = 2.0
TOKEN_MS = 40


async def first_then_rest(stream: Any, started: asyncio.Event) -> str:
    """Read a stream: signal once its first chunk is in, then read it to its end."""
    text = ""
    async for chunk in stream:
        started.set()
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    return text


async def test_sigterm_lets_streams_finish_within_the_drain_then_ends_the_rest(
        fresh_sim: SimHandle, tmp_path: Path) -> None:
    fresh_sim.config(ttft_ms=0, token_ms=TOKEN_MS, output_tokens=200)
    cfg = gateway_config(fresh_sim.url)
    server: dict[str, Any] = dict(cfg["server"])  # type: ignore[call-overload]
    cfg["server"] = {**server, "drain_seconds": DRAIN_S, "max_tokens_cap": 500}
    gw = start_gateway(cfg, workdir=tmp_path)
    c = openai.AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    try:
        short_started, long_started = asyncio.Event(), asyncio.Event()
        # 10 tokens finish well within the drain; 200 (8 s) cannot.
        short = asyncio.create_task(first_then_rest(await c.chat.completions.create(
            model="sim", stream=True, max_tokens=10,
            messages=[{"role": "user", "content": "short"}]), short_started))
        long = asyncio.create_task(first_then_rest(await c.chat.completions.create(
            model="sim", stream=True, max_tokens=200,
            messages=[{"role": "user", "content": "long"}]), long_started))
        await short_started.wait()
        await long_started.wait()
        gw.proc.send_signal(signal.SIGTERM)
        assert len(await short) > 0  # finished normally, after the signal
        with pytest.raises(openai.APIError) as ended:
            await long
        # An error event in the stream, not a connection cut.
        assert not isinstance(ended.value, openai.APIConnectionError)
        assert "shut down" in ended.value.message
        # It exits by itself (uvicorn re-raises the SIGTERM it caught once it is done).
        assert await asyncio.to_thread(gw.proc.wait, 30) in (0, -signal.SIGTERM)
    finally:
        await c.close()
        gw.stop()
    log = gw.log()
    assert "Traceback" not in log and "CancelledError" not in log
    store = EmbeddedStore(str(tmp_path / ".tollway"))
    try:
        rows = sorted(await store.ledger.rows(), key=lambda r: r.output_tokens)
    finally:
        await store.close()
    assert [(r.status, r.outcome) for r in rows] == [(200, "ok"), (503, "error")]
    short_row, long_row = rows
    assert short_row.output_tokens == 10
    # What the cut stream generated is billed: more than the short one, less than all.
    assert 10 < long_row.output_tokens < 200 and long_row.error == "service_unavailable"
