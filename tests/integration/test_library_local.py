"""`tollway.Gateway.open()` with no configuration — the zero-setup default, the bundled
local model — behind the official SDKs, sync and async, JSON and streaming: every
request answered by the model and in the ledger."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tollway

MASTER = "master-" + os.urandom(8).hex()
ASK: Any = [{"role": "user", "content": "Say hello."}]
N = 4  # tokens per answer: the model runs on a shared core


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tollway.Gateway]:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("cwd"))  # its store, ./.tollway, goes there
        mp.delenv("TOLLWAY_CONFIG", raising=False)
        mp.setenv("TOLLWAY_MASTER_KEY", MASTER)  # only to read the ledger back
        with tollway.Gateway.open() as g:
            assert Path(".tollway").is_dir()
            yield g


def test_sync_sdks_on_the_local_model(gw: tollway.Gateway) -> None:
    oai, claude = gw.openai(), gw.anthropic()
    with gw.attribute(user="local-sync"):
        reply = oai.chat.completions.create(model="local", messages=ASK, max_tokens=N)
        chunks = list(oai.chat.completions.create(model="local", messages=ASK,
                                                  max_tokens=N, stream=True))
        msg = claude.messages.create(model="local", max_tokens=N, messages=ASK)
    assert reply.choices[0].message.content and reply.usage is not None
    assert reply.usage.completion_tokens <= N
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert msg.content[0].type == "text" and msg.content[0].text
    rows = _ledger(gw, "local-sync")
    assert [(r["provider"], r["stream"], r["status"]) for r in rows] == [
        ("local", False, 200), ("local", True, 200), ("local", False, 200)]


async def test_async_sdks_on_the_local_model(gw: tollway.Gateway) -> None:
    oai, claude = gw.async_openai(), gw.async_anthropic()
    with gw.attribute(user="local-async"):
        stream = await oai.chat.completions.create(model="local", messages=ASK,
                                                   max_tokens=N, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        async with claude.messages.stream(model="local", max_tokens=N,
                                          messages=ASK) as s:
            final = await s.get_final_message()
    assert text and final.content and final.usage.output_tokens <= N
    assert [r["stream"] for r in _ledger(gw, "local-async")] == [True, True]
    await oai.close()
    await claude.close()


def _ledger(gw: tollway.Gateway, user: str) -> list[dict[str, Any]]:
    with gw.http() as http:
        rows: list[dict[str, Any]] = http.get("/admin/ledger").json()["data"]
    return [r for r in rows if r["user"] == user]
