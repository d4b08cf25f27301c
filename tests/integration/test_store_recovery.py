"""Budgets that survive their store, and replicas that start without it.

Redis: a redis-server of the test's own, restarted empty or flushed mid-run (never
the machine's shared Redis). PostgreSQL: the machine's, a scratch database per module
(closed to connections where a test says so).

Every request of a budgeted key here costs exactly its worst case (the simulator
answers `max_tokens` tokens), so a budget of N worst cases admits N requests, and any
spend a lost counter forgot would show as more."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import openai
import orjson
import pytest

from tests.conftest import gateway_config
from tests.helpers.admin import admin, call, create_key, ledger_rows
from tests.helpers.clients import past_503s, status_of
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.gateway import fleet as fleet_of
from tests.helpers.postgres import run_sql, scratch_database, url_of
from tests.helpers.redis import RedisServer
from tests.helpers.sim import SimHandle
from tollway.accounting.tokens import count_request
from tollway.store.postgres import migrations
from tollway.wire.openai import parse_chat_request

MASTER = "master-" + os.urandom(8).hex()
MAX_TOKENS = 50
MESSAGES: Any = [{"role": "user", "content": "What does a budget survive?"}]
PRICE = {"input": 1.0, "output": 2.0}  # dollars per million tokens


def prompt_tokens() -> int:
    return count_request(parse_chat_request(orjson.dumps(
        {"model": "sim", "messages": MESSAGES})), "sim-model")


def worst_usd() -> float:
    return (prompt_tokens() * PRICE["input"] + MAX_TOKENS * PRICE["output"]) / 1e6


def shared_config(sim: SimHandle, redis: RedisServer, postgres_url: str) -> dict[str, Any]:
    cfg = gateway_config(sim.url)
    cfg["store"] = {"redis_url": redis.url, "postgres_url": postgres_url}
    cfg["prices"] = {"sim-model": PRICE}
    return cfg


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with scratch_database("tollway_recovery") as name:
        yield url_of(name)


@pytest.fixture(scope="module")
def fleet(sim: SimHandle, own_redis: RedisServer, postgres_url: str
          ) -> Iterator[list[GatewayHandle]]:
    """Three replicas on one shared store (the first rebuilds the fresh store's counters
    before it serves; the others find them current)."""
    with fleet_of(shared_config(sim, own_redis, postgres_url),
                  env={"TOLLWAY_MASTER_KEY": MASTER}) as handles:
        yield handles


@pytest.fixture
async def clients(fleet: list[GatewayHandle]) -> AsyncIterator[Callable[[str], list[Any]]]:
    made: list[openai.AsyncOpenAI] = []

    def per_replica(secret: str) -> list[openai.AsyncOpenAI]:
        out = [openai.AsyncOpenAI(base_url=g.base_url, api_key=secret, max_retries=0,
                                  http_client=openai.DefaultAsyncHttpx2Client())
               for g in fleet]
        made.extend(out)
        return out

    yield per_replica
    for c in made:
        await c.close()


class Traffic:
    """Requests of three kinds — JSON, a stream read to its end, a stream the client
    drops after its first chunk — each counted as sent, with the status it got."""

    KINDS = ("json", "stream", "json", "abort")  # half streams, half of those aborted

    def __init__(self) -> None:
        self.sent = 0

    async def one(self, client: openai.AsyncOpenAI, kind: str) -> int:
        self.sent += 1
        if kind == "json":
            return await status_of(client.chat.completions.create(
                model="sim", messages=MESSAGES, max_tokens=MAX_TOKENS))
        try:
            stream = await client.chat.completions.create(
                model="sim", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True)
        except openai.APIStatusError as e:
            return e.status_code
        async for _ in stream:
            if kind == "abort":
                break
        await stream.close()  # the client goes away (or has read it all)
        return 200

    async def past_503s(self, client: openai.AsyncOpenAI, kind: str) -> int:
        """As a client that comes back after each 503 (its Retry-After is 3 s)."""
        return (await past_503s(lambda: self.one(client, kind), every=1.0))[0]

    async def burst(self, clients: list[openai.AsyncOpenAI], n: int,
                    send: Callable[[openai.AsyncOpenAI, str], Awaitable[int]] | None = None
                    ) -> list[int]:
        """`n` requests at once, spread over the replicas, of every kind in turn."""
        send = send or self.one
        return list(await asyncio.gather(*(send(clients[i % len(clients)],
                                                self.KINDS[i % len(self.KINDS)])
                                           for i in range(n))))


def flush_ledgers(fleet: list[GatewayHandle]) -> None:
    for g in fleet:  # each replica writes its buffered rows when its ledger is read
        admin(g.url, MASTER, "GET", "/admin/ledger?since=0&limit=1")


def spent(fleet: list[GatewayHandle], key_id: str) -> tuple[int, float]:
    """(rows, dollars) the ledger has for a key, from every replica."""
    flush_ledgers(fleet)
    rows = [r for r in ledger_rows(fleet[0].url, MASTER) if r["key_id"] == key_id]
    return len(rows), sum(r["cost_usd"] for r in rows)


def rebuilds_logged(fleet: list[GatewayHandle]) -> int:
    return sum(g.log().count("budget counters rebuilt from the ledger") for g in fleet)


def sim_spent(sim: SimHandle) -> float:
    """What the upstream itself says was used: every request it got read the prompt,
    and every token it wrote was generated."""
    stats = sim.stats()
    return (stats["requests"] * prompt_tokens() * PRICE["input"]
            + stats["tokens_generated"] * PRICE["output"]) / 1e6


# Item 8: a Redis that restarts empty forgot the spending.

async def test_a_total_budget_holds_when_redis_restarts_empty_twice(
        fleet: list[GatewayHandle], own_redis: RedisServer, fresh_sim: SimHandle,
        clients: Callable[[str], list[openai.AsyncOpenAI]]) -> None:
    fresh_sim.config(output_tokens=MAX_TOKENS)
    limit = 4 * worst_usd()
    secret, rec = create_key(fleet[0].url, MASTER, budgets=[{"usd": limit, "period": "total"}])
    c = clients(secret)[0]
    traffic = Traffic()
    assert [await traffic.one(c, "json") for _ in range(5)] == [200] * 4 + [429]
    for _ in range(2):
        own_redis.restart_empty()
        # Refused while the counters are rebuilt from the ledger, then refused for good.
        assert await traffic.past_503s(c, "json") == 429
        assert await traffic.one(c, "json") == 429
    rows, usd = spent(fleet, rec["id"])
    assert rows == traffic.sent
    assert usd <= limit * (1 + 1e-9) and fresh_sim.stats()["requests"] == 4
    assert sim_spent(fresh_sim) <= limit * (1 + 1e-9)


# Acceptance: a fleet's budget, with and without Redis flushed mid-run.

async def test_600_concurrent_requests_on_three_replicas_never_overshoot(
        fleet: list[GatewayHandle], fresh_sim: SimHandle,
        clients: Callable[[str], list[openai.AsyncOpenAI]]) -> None:
    fresh_sim.config(output_tokens=MAX_TOKENS, ttft_ms=20)
    limit = 20 * worst_usd()
    secret, rec = create_key(fleet[0].url, MASTER, budgets=[{"usd": limit, "period": "day"}])
    traffic = Traffic()
    statuses = await traffic.burst(clients(secret), 600)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 20
    rows, usd = spent(fleet, rec["id"])
    assert rows == traffic.sent == 600
    assert usd <= limit * (1 + 1e-9)
    assert sim_spent(fresh_sim) <= limit * (1 + 1e-9)


async def test_a_fleets_budget_holds_when_redis_is_flushed_mid_run(
        fleet: list[GatewayHandle], own_redis: RedisServer, fresh_sim: SimHandle,
        clients: Callable[[str], list[openai.AsyncOpenAI]]) -> None:
    """Settled spend (wave A, in the ledger) and in-flight holds (wave B, still running
    when Redis is flushed) both count again before wave C is admitted."""
    fresh_sim.config(output_tokens=MAX_TOKENS, ttft_ms=20)
    limit = 40 * worst_usd()
    secret, rec = create_key(fleet[0].url, MASTER, budgets=[{"usd": limit, "period": "total"}])
    per_replica, traffic = clients(secret), Traffic()
    wave_a = await traffic.burst(per_replica, 20)
    assert wave_a == [200] * 20
    fresh_sim.config(ttft_ms=4000)  # wave B: in flight across the flush and the rebuild
    wave_b = asyncio.ensure_future(traffic.burst(per_replica, 10))
    await asyncio.to_thread(fresh_sim.wait_for, lambda s: s["requests"] == 30, 10.0)
    fresh_sim.config(ttft_ms=20)
    rebuilds = rebuilds_logged(fleet)
    assert own_redis.cli("flushall") == "OK"
    wave_c = await traffic.burst(per_replica, 570, traffic.past_503s)
    assert await wave_b == [200] * 10
    assert set(wave_c) <= {200, 429} and wave_c.count(200) <= 10
    assert rebuilds_logged(fleet) == rebuilds + 1  # one replica rebuilt, for the fleet
    rows, usd = spent(fleet, rec["id"])
    assert rows == traffic.sent
    assert usd <= limit * (1 + 1e-9)
    assert sim_spent(fresh_sim) <= limit * (1 + 1e-9)


# Item 9: a replica that starts while Redis and PostgreSQL are down.

@pytest.fixture
def closed_database() -> Iterator[str]:
    """A new database that refuses connections (until the test opens it)."""
    with scratch_database("tollway_boot") as db:
        asyncio.run(run_sql(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false'))
        yield db


async def test_a_replica_starts_with_its_store_down_and_connects_by_itself(
        sim: SimHandle, fresh_sim: SimHandle, closed_database: str) -> None:
    redis = RedisServer()  # not started yet
    cfg = shared_config(sim, redis, url_of(closed_database))
    cfg["budgets"] = {"features": {"metered": [{"usd": 1.0, "period": "day"}]}}
    gw = start_gateway(cfg, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        await _serves_by_the_failure_policy_then_recovers(gw, redis, closed_database)
    finally:
        gw.stop()
        redis.stop()
    assert "Traceback" not in gw.log()


async def _serves_by_the_failure_policy_then_recovers(gw: GatewayHandle, redis: RedisServer,
                                                      db: str) -> None:
    status, ready = call(gw.url, MASTER, "GET", "/health/ready")
    assert status == 200 and ready["store"]["down"] == ["postgres", "redis"]
    assert ready["store"]["budget_counters"] == "unknown"
    master = openai.AsyncOpenAI(base_url=gw.base_url, api_key=MASTER, max_retries=0)
    stranger = openai.AsyncOpenAI(base_url=gw.base_url, api_key="tw-" + "x" * 40,
                                  max_retries=0)
    traffic = Traffic()
    metered: Any = {"extra_headers": {"x-tollway-feature": "metered"}}
    try:
        # Rate limits in the process, the ledger in memory: unbudgeted requests go on;
        # budgets and keys fail closed.
        assert await master.chat.completions.create(model="sim", messages=MESSAGES)
        with pytest.raises(openai.APIStatusError) as budgeted:
            await master.chat.completions.create(model="sim", messages=MESSAGES, **metered)
        with pytest.raises(openai.APIStatusError) as keyed:
            await stranger.chat.completions.create(model="sim", messages=MESSAGES)
        assert budgeted.value.status_code == keyed.value.status_code == 503
        traffic.sent += 3

        redis.start()
        await run_sql(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        deadline = time.monotonic() + 20
        while (ready := call(gw.url, MASTER, "GET", "/health/ready")[1])["store"]["down"]:
            assert time.monotonic() < deadline, ready
            await asyncio.sleep(0.1)  # another process reconnecting: nothing to await
        status, refused = await past_503s(lambda: status_of(master.chat.completions.create(
            model="sim", messages=MESSAGES, **metered)))
        traffic.sent += 1 + refused
        assert status == 200
    finally:
        await master.close()
        await stranger.close()
    conn = await asyncpg.connect(url_of(db))
    try:
        applied = [r[0] for r in await conn.fetch(
            "SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()
    assert applied == [v for v, _ in migrations()]
    assert len(ledger_rows(gw.url, MASTER)) == traffic.sent  # the buffered rows too
