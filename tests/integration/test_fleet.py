"""A fleet: three gateway processes on one shared store (Redis + PostgreSQL, the
machine's real ones) enforce one budget and one rate limit between them, and share
one ledger and the console's sessions."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import orjson
import pytest
import redis.asyncio as aioredis

from tests.conftest import gateway_config
from tests.helpers.admin import admin, create_key, ledger_rows
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.gateway import fleet as fleet_of
from tests.helpers.postgres import scratch_database, url_of
from tests.helpers.raw import request
from tests.helpers.sim import SimHandle
from tollway.accounting.tokens import count_request
from tollway.wire.openai import parse_chat_request

MASTER = "master-" + os.urandom(8).hex()
REDIS_DB = "redis://127.0.0.1:6379/7"  # a database of its own, flushed around the test
MAX_TOKENS = 50
MESSAGES: Any = [{"role": "user", "content": "Fleet-wide question."}]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with scratch_database("tollway_fleet") as name:
        yield url_of(name)


@pytest.fixture(scope="module")
def fleet(sim: SimHandle, postgres_url: str) -> Iterator[list[GatewayHandle]]:
    async def flush() -> None:
        r = aioredis.from_url(REDIS_DB)
        await r.flushdb()
        await r.aclose()

    asyncio.run(flush())
    cfg = gateway_config(sim.url)
    cfg["store"] = {"redis_url": REDIS_DB, "postgres_url": postgres_url}
    cfg["prices"] = {"sim-model": {"input": 1.0, "output": 2.0}}
    cfg["rate_limits"] = {"models": {"sim-alias-limited": {"rpm": 60}}}
    cfg["models"]["sim-alias-limited"] = cfg["models"]["sim"]  # type: ignore[index]
    try:
        with fleet_of(cfg, env={"TOLLWAY_MASTER_KEY": MASTER}) as handles:
            yield handles
    finally:
        asyncio.run(flush())


def worst_usd() -> float:
    n_in = count_request(parse_chat_request(orjson.dumps(
        {"model": "sim", "messages": MESSAGES})), "sim-model")
    return (n_in * 1.0 + MAX_TOKENS * 2.0) / 1e6


@pytest.fixture
async def clients(fleet: list[GatewayHandle]) -> AsyncIterator[list[openai.AsyncOpenAI]]:
    made: list[openai.AsyncOpenAI] = []
    yield made
    for c in made:
        await c.close()


async def test_three_replicas_never_overshoot_one_budget(
        fleet: list[GatewayHandle], fresh_sim: SimHandle,
        clients: list[openai.AsyncOpenAI]) -> None:
    fresh_sim.config(output_tokens=MAX_TOKENS, ttft_ms=20)  # each answer costs its worst case
    limit = 20 * worst_usd()
    secret, rec = create_key(fleet[0].url, MASTER, budgets=[{"usd": limit, "period": "day"}])
    clients += [openai.AsyncOpenAI(base_url=g.base_url, api_key=secret, max_retries=0,
                                   http_client=openai.DefaultAsyncHttpx2Client())
                for g in fleet]

    async def one(i: int) -> int:
        try:
            await clients[i % 3].chat.completions.create(
                model="sim", messages=MESSAGES, max_tokens=MAX_TOKENS)
            return 200
        except openai.APIStatusError as e:
            return e.status_code

    statuses = await asyncio.gather(*(one(i) for i in range(600)))
    assert statuses.count(200) == 20 and statuses.count(429) == 580
    assert fresh_sim.stats()["requests"] == 20
    for g in fleet:  # each replica flushes its own ledger buffer when asked
        admin(g.url, MASTER, "GET", "/admin/ledger?since=0")
    rows = [r for r in ledger_rows(fleet[0].url, MASTER) if r["key_id"] == rec["id"]]
    assert len(rows) == 600  # one row per request, from all three replicas
    assert sum(r["cost_usd"] for r in rows) <= limit * (1 + 1e-9)


async def test_a_fleet_wide_rate_limit_holds_across_replicas(
        fleet: list[GatewayHandle], fresh_sim: SimHandle,
        clients: list[openai.AsyncOpenAI]) -> None:
    clients += [openai.AsyncOpenAI(base_url=g.base_url, api_key=MASTER, max_retries=0)
                for g in fleet]
    ok = 0
    for i in range(120):
        try:
            await clients[i % 3].chat.completions.create(
                model="sim-alias-limited", messages=MESSAGES, max_tokens=5)
            ok += 1
        except openai.RateLimitError:
            pass
    assert ok == 60  # one exact sliding window in Redis, not 3 x 60


async def test_a_key_revoked_on_one_replica_is_refused_by_the_others(
        fleet: list[GatewayHandle], fresh_sim: SimHandle,
        clients: list[openai.AsyncOpenAI]) -> None:
    secret, rec = create_key(fleet[1].url, MASTER, name="roaming")
    clients += [openai.AsyncOpenAI(base_url=g.base_url, api_key=secret, max_retries=0)
                for g in fleet]
    for c in clients:
        await c.chat.completions.create(model="sim", messages=MESSAGES, max_tokens=5)
    admin(fleet[0].url, MASTER, "POST", f"/admin/keys/{rec['id']}/revoke")
    # The other replicas hear of it by NOTIFY, milliseconds later (another process:
    # no event to await here, so poll with a deadline).
    for c in clients:
        deadline = time.monotonic() + 1.0
        while True:
            try:
                await c.chat.completions.create(model="sim", messages=MESSAGES, max_tokens=5)
            except openai.AuthenticationError:
                break
            assert time.monotonic() < deadline, "revocation not seen within 1 s"
            await asyncio.sleep(0.01)


async def test_workers_share_the_store(fleet: list[GatewayHandle], sim: SimHandle,
                                       postgres_url: str, fresh_sim: SimHandle) -> None:
    """`--workers 2`: two processes on one port, one budget between them."""
    fresh_sim.config(output_tokens=MAX_TOKENS)
    cfg = gateway_config(sim.url)
    cfg["store"] = {"redis_url": REDIS_DB, "postgres_url": postgres_url}
    cfg["prices"] = {"sim-model": {"input": 1.0, "output": 2.0}}
    gw = start_gateway(cfg, env={"TOLLWAY_MASTER_KEY": MASTER}, args=["--workers", "2"])
    try:
        secret, _ = create_key(gw.url, MASTER, budgets=[{"usd": 5 * worst_usd(),
                                                         "period": "day"}])
        statuses = []
        for _ in range(4):  # a new connection each time: the kernel spreads them
            async with openai.AsyncOpenAI(base_url=gw.base_url, api_key=secret,
                                          max_retries=0) as c:
                for _ in range(3):
                    try:
                        await c.chat.completions.create(model="sim", messages=MESSAGES,
                                                        max_tokens=MAX_TOKENS)
                        statuses.append(200)
                    except openai.APIStatusError as e:
                        statuses.append(e.status_code)
        assert statuses.count(200) == 5 and statuses.count(429) == 7
    finally:
        gw.stop()


def test_workers_need_the_shared_store(tmp_path: Any) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "tollway.cli", "serve", "--workers", "2"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 1
    assert "--workers: more than one worker needs the shared store" in out.stderr


async def test_a_conversation_continues_on_whichever_replica_takes_the_turn(
        fleet: list[GatewayHandle], fresh_sim: SimHandle,
        clients: list[openai.AsyncOpenAI]) -> None:
    """Each turn lands on the next replica, streamed or not; every one sees all the
    turns before it (each was stored in PostgreSQL before its reply ended)."""
    key, _ = create_key(fleet[0].url, MASTER, name="conversing")
    clients += [openai.AsyncOpenAI(base_url=g.base_url, api_key=key, max_retries=0)
                for g in fleet]
    cid = "fleet-" + os.urandom(4).hex()
    said: list[str] = []
    for turn in range(6):
        c = clients[turn % 3]
        question = f"Question {turn}?"
        kwargs: Any = {"model": "sim", "extra_headers": {"x-tollway-conversation": cid},
                       "messages": [{"role": "user", "content": question}]}
        if turn % 2:
            stream = await c.chat.completions.create(stream=True, **kwargs)
            answer = "".join([ch.choices[0].delta.content or "" async for ch in stream
                              if ch.choices])
        else:
            answer = (await c.chat.completions.create(**kwargs)).choices[0].message.content
        sent = fresh_sim.stats()["recent_requests"][-1]["body"]["messages"]
        assert [m["content"] for m in sent] == [*said, question]
        said += [question, answer or ""]


def test_a_console_session_opened_on_one_replica_works_on_every_other(
        fleet: list[GatewayHandle]) -> None:
    """Sessions live in the shared store's cache part: signing in on one replica is
    signing in on all, and so is signing out."""
    secret, _ = create_key(fleet[0].url, MASTER, name="fleet-console")
    console = {"x-tollway-console": "1"}
    sessions = {}
    for who, key in (("master", MASTER), ("key", secret)):
        opened = request(fleet[0].url, "POST", "/console/session", {"key": key}, console)
        assert opened.status == 200, opened
        sessions[who] = {**console, "cookie": opened.headers["set-cookie"].split(";")[0]}
    for g in fleet[1:]:
        assert request(g.url, "GET", "/admin/keys", headers=sessions["master"]).status == 200
        chat = request(g.url, "POST", "/v1/chat/completions",
                       {"model": "sim", "messages": MESSAGES}, sessions["key"])
        assert chat.status == 200, chat
        assert request(g.url, "GET", "/console/session",
                       headers=sessions["key"]).json()["role"] == "key"
    assert request(fleet[1].url, "DELETE", "/console/session",
                   headers=sessions["master"]).status == 200
    assert request(fleet[2].url, "GET", "/admin/keys", headers=sessions["master"]).status == 401
