"""The shared store going away and coming back: no 500s, each part follows its
failure policy, nothing restarts, no ledger row is lost.

Redis: a redis-server of the test's own (stopped and started again mid-run).
PostgreSQL: the machine's server, with the test's database closed to connections
(and its sessions cut) mid-run, then opened again."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import openai
import pytest

from tests.conftest import gateway_config
from tests.helpers.admin import admin, create_key, ledger_rows
from tests.helpers.gateway import GatewayHandle, free_port, start_gateway
from tests.helpers.postgres import run_sql, scratch_database, url_of
from tests.helpers.sim import SimHandle

MASTER = "master-" + os.urandom(8).hex()
MESSAGES: Any = [{"role": "user", "content": "Still there?"}]


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                             check=False).stdout.strip() != b"PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)  # waiting for a port to open: no event to await

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    r = RedisServer()
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with scratch_database("tollway_outage") as name:
        yield name


@pytest.fixture(scope="module")
def ogw(sim: SimHandle, redis_server: RedisServer, database: str) -> Iterator[GatewayHandle]:
    cfg = gateway_config(sim.url)
    cfg["store"] = {"redis_url": f"redis://127.0.0.1:{redis_server.port}/0",
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


async def test_redis_down_and_back(ogw: GatewayHandle, redis_server: RedisServer,
                                   fresh_sim: SimHandle) -> None:
    secret, _ = create_key(ogw.url, MASTER, budgets=[{"usd": 1.0, "period": "day"}])
    budgeted = openai.AsyncOpenAI(base_url=ogw.base_url, api_key=secret, max_retries=0)
    plain = openai.AsyncOpenAI(base_url=ogw.base_url, api_key=MASTER, max_retries=0)
    assert await send(budgeted, 5) == [200] * 5
    redis_server.stop()
    down_budgeted = await send(budgeted, 5)
    down_plain = await send(plain, 5)
    redis_server.start()
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
