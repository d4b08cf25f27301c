"""The shared store going away and coming back: no 500s, each part follows its
failure policy, nothing restarts, no ledger row is lost.

Redis: a redis-server of the test's own (stopped and started again mid-run).
PostgreSQL: the machine's server, with the test's database closed to connections
(and its sessions cut) mid-run, then opened again."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import openai
import pytest

from tests.conftest import gateway_config
from tests.helpers.admin import admin, create_key, ledger_rows
from tests.helpers.clients import past_503s, status_of
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.postgres import run_sql, scratch_database, url_of
from tests.helpers.redis import RedisServer
from tests.helpers.sim import SimHandle

MASTER = "master-" + os.urandom(8).hex()
MESSAGES: Any = [{"role": "user", "content": "Still there?"}]


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with scratch_database("tollway_outage") as name:
        yield name


@pytest.fixture(scope="module")
def ogw(sim: SimHandle, own_redis: RedisServer, database: str) -> Iterator[GatewayHandle]:
    cfg = gateway_config(sim.url)
    cfg["store"] = {"redis_url": own_redis.url,
                    "postgres_url": url_of(database)}
    cfg["prices"] = {"sim-model": {"input": 1.0, "output": 2.0}}
    cfg["rate_limits"] = {"models": {"sim": {"rpm": 10_000}}}
    cfg["ledger"] = {"flush_seconds": 0.2}
    handle = start_gateway(cfg, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


async def send(c: openai.AsyncOpenAI, n: int) -> list[int]:
    out = []
    for _ in range(n):
        try:
            await c.chat.completions.create(model="sim", messages=MESSAGES, max_tokens=5)
            out.append(200)
        except openai.APIStatusError as e:
            out.append(e.status_code)
    return out


async def test_redis_down_and_back(ogw: GatewayHandle, own_redis: RedisServer,
                                   fresh_sim: SimHandle) -> None:
    secret, _ = create_key(ogw.url, MASTER, budgets=[{"usd": 1.0, "period": "day"}])
    budgeted = openai.AsyncOpenAI(base_url=ogw.base_url, api_key=secret, max_retries=0)
    plain = openai.AsyncOpenAI(base_url=ogw.base_url, api_key=MASTER, max_retries=0)
    assert await send(budgeted, 5) == [200] * 5
    own_redis.stop()
    down_budgeted = await send(budgeted, 5)
    down_plain = await send(plain, 5)
    own_redis.start()  # empty: budgeted requests wait for the counters' rebuild
    assert (await past_503s(lambda: status_of(budgeted.chat.completions.create(
        model="sim", messages=MESSAGES, max_tokens=5))))[0] == 200
    back = await send(budgeted, 5)
    await budgeted.close()
    await plain.close()
    # Budgets fail closed (503, never over-spend); rate limits fail open (limited in
    # this process); nothing answers 500; after the restart all is normal again.
    assert down_budgeted == [503] * 5
    assert down_plain == [200] * 5
    assert back == [200] * 5
    assert "rate-limit store unreachable" in ogw.log()


async def test_postgres_down_and_back_loses_no_ledger_row(
        ogw: GatewayHandle, database: str, fresh_sim: SimHandle) -> None:
    def count() -> int:
        return len(ledger_rows(ogw.url, MASTER))

    before = count()
    c = openai.AsyncOpenAI(base_url=ogw.base_url, api_key=MASTER, max_retries=0)
    assert await send(c, 5) == [200] * 5
    await run_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    await run_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
              f"WHERE datname = '{database}'")
    during = await send(c, 20)  # the master key needs no key lookup; rows wait in memory
    with pytest.raises(asyncpg.PostgresError):  # the outage is real
        await asyncpg.connect(url_of(database))
    await run_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    after = await send(c, 5)
    await c.close()
    assert during == [200] * 20 and after == [200] * 5
    # The buffered rows are written once the database is back (the admin read flushes).
    deadline = time.monotonic() + 10
    while (n := count()) < before + 30:
        assert time.monotonic() < deadline, (n, before)
        await asyncio.sleep(0.1)
    assert n == before + 30
    assert admin(ogw.url, MASTER, "GET", "/health/ready")  # still serving, no restart
