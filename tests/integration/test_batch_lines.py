"""A batch's lines through the real request path: an in-process gateway in front of the
simulator, on the embedded store and on the shared one (the machine's Redis and
PostgreSQL). The batch holds every line's worst case when it is created; each line
runs prepaid — nothing reserved, no rate limit — and settles its own hold to its real
cost, however it ends; the holds of lines that never ran are given back; a line run
again is counted once and keeps its first ledger row; the ledger and the admin API
name each row's batch."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from tests.conftest import gateway_config
from tests.helpers.postgres import scratch_database, url_of
from tests.helpers.sim import SimHandle
from tollway import config
from tollway.accounting.rows import LedgerRow
from tollway.accounting.settlement import Answered, Failed, Settlement
from tollway.errors import BudgetExceeded, NotFound, RateLimited
from tollway.gateway import Gateway
from tollway.gateway.call import Call
from tollway.policy.admission import LineHold
from tollway.policy.auth import Caller
from tollway.server.app import TollwayApp
from tollway.types import ChatRequest, EmbeddingRequest, Message

MASTER = "master-" + os.urandom(8).hex()
REDIS_DB = "redis://127.0.0.1:6379/10"  # a database of its own, flushed around the module
NOW = 1_800_000_000.0  # the gateway's clock: one budget window for the whole test
WORST = 2.0 ** -6  # a line's worst case, in dollars: a binary fraction, so levels are exact


def flush_redis() -> None:
    r = redis.Redis.from_url(REDIS_DB)
    try:
        r.flushdb()
    finally:
        r.close()


@pytest.fixture(scope="module")
def shared_store() -> Iterator[dict[str, str]]:
    flush_redis()
    try:
        with scratch_database("tollway_batch") as name:
            yield {"redis_url": REDIS_DB, "postgres_url": url_of(name)}
    finally:
        flush_redis()


@pytest.fixture(params=["embedded", "shared"])
async def gw(request: pytest.FixtureRequest, fresh_sim: SimHandle, tmp_path: Path,
             shared_store: dict[str, str]) -> AsyncIterator[Gateway]:
    cfg = gateway_config(fresh_sim.url)
    cfg["models"]["emb"] = {"deployments": [  # type: ignore[index]
        {"provider": "openai", "model": "text-embedding-3-small",
         "api_base": f"{fresh_sim.url}/v1", "api_key": "sim-key"}]}
    cfg["models"]["sim-cached"] = {**cfg["models"]["sim"],  # type: ignore[index, dict-item]
                                   "cache": {"enabled": True, "semantic": False}}
    cfg["prices"] = {"sim-model": {"input": 1.0, "output": 2.0}}
    cfg["budgets"] = {"users": {"*": [{"usd": 1.0, "period": "day"}]}}
    cfg["rate_limits"] = {"ips": {"rpm": 1}}
    cfg["auth"] = {"master_key": MASTER}
    store = shared_store if request.param == "shared" else {}
    cfg["store"] = {**store, "path": str(tmp_path)}
    g = Gateway(config.parse(cfg, env={}), clock=lambda: NOW)
    await g.start()
    try:
        yield g
    finally:
        await g.close()


class Batch:
    """A batch of `n` lines for one caller, as a batch runner would drive it."""

    def __init__(self, gw: Gateway, n: int) -> None:
        self.gw = gw
        u = uuid.uuid4()
        self.id = f"batch_{u.hex[:8]}"
        # An address and a user of its own: rate limits and budget counters from 0.
        self.caller = Caller(ip="10.{}.{}.{}".format(*u.bytes[:3]), user=f"u-{self.id}")
        self.row_ids = [f"row_b_{self.id}_{i}" for i in range(n)]
        [self.budget] = gw.admission.budgets(self.caller, None, NOW)

    async def create(self) -> None:
        applied = self.gw.admission.budgets(self.caller, None, NOW)
        await self.gw.admission.hold_many(
            [LineHold(rid, applied, WORST, 0) for rid in self.row_ids], NOW + 86_400, NOW)

    def line(self, i: int) -> Call:
        return Call(f"req-{self.id}-{i}", caller=self.caller, batch=self.id, prepaid=True,
                    row_id=self.row_ids[i])

    async def chat(self, i: int, model: str = "sim", text: str | None = None) -> Settlement:
        call = self.line(i)
        try:
            answer = await self.gw.chat(call, ChatRequest(
                model=model, max_tokens=16,
                messages=[Message(role="user", content=text or f"Line {i} of the batch.")]))
        except NotFound as e:
            return await self.gw.finish(call, Failed(e))
        return await self.gw.finish(call, Answered(answer))

    async def embed(self, i: int) -> Settlement:
        call = self.line(i)
        answer = await self.gw.embed(call, EmbeddingRequest(model="emb",
                                                            input=[f"Line {i}."]))
        return await self.gw.finish(call, Answered(answer))

    async def level(self) -> float:
        [got] = await self.gw.store.budgets.levels([self.budget.counter], NOW)
        return got

    async def rows(self) -> list[LedgerRow]:
        await self.gw.ledger.flush()
        return [r for r in await self.gw.store.ledger.rows() if r.batch_id == self.id]


async def interactive(gw: Gateway, batch: Batch) -> None:
    """A request of its own from the batch's address (another user: its budget apart)."""
    call = Call(f"req-{uuid.uuid4().hex}", caller=Caller(ip=batch.caller.ip, user="other"))
    try:
        answer = await gw.chat(call, ChatRequest(model="sim", max_tokens=16, messages=[
            Message(role="user", content="An interactive question.")]))
    except RateLimited as e:
        await gw.finish(call, Failed(e))
        raise
    await gw.finish(call, Answered(answer))


async def admin_get(gw: Gateway, path: str) -> Any:
    """The admin API, served in-process by the app around this gateway."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=TollwayApp(gw.config, gw)),
                                 base_url="http://gw") as client:
        got = await client.get(path, headers={"Authorization": f"Bearer {MASTER}"})
    assert got.status_code == 200, got.text
    return got.json()


async def test_lines_settle_their_own_holds_and_the_ledger_names_their_batch(
        gw: Gateway) -> None:
    batch = Batch(gw, 4)
    await interactive(gw, batch)  # the address's one request a minute, taken
    await batch.create()
    assert await batch.level() == 4 * WORST
    # Each line's hold gives way to its real cost; no line reserves, none is limited.
    s0 = await batch.chat(0)
    assert await batch.level() == s0.usd + 3 * WORST
    s1 = await batch.chat(1)
    assert await batch.level() == (s0.usd + s1.usd) + 2 * WORST
    s2 = await batch.embed(2)
    assert 0 < s2.usd < s0.usd and await batch.level() == (s0.usd + s1.usd + s2.usd) + WORST
    with pytest.raises(RateLimited):  # the address's own requests are still limited
        await interactive(gw, batch)
    await gw.admission.release_many(batch.row_ids[3:])  # the batch ends with line 3 unrun
    assert await batch.level() == s0.usd + s1.usd + s2.usd

    rows = await batch.rows()
    assert [(r.id, r.kind, r.outcome, r.cost_usd) for r in rows] == [
        (batch.row_ids[0], "chat", "ok", s0.usd), (batch.row_ids[1], "chat", "ok", s1.usd),
        (batch.row_ids[2], "embeddings", "ok", s2.usd)]
    spend = await admin_get(gw, "/admin/spend?by=batch")
    [mine] = [g for g in spend["data"] if g["group"] == batch.id]
    assert mine["requests"] == 3
    assert mine["cost_usd"] == pytest.approx(s0.usd + s1.usd + s2.usd, abs=1e-12)
    assert any(g["group"] == "(none)" for g in spend["data"])  # the interactive requests
    listed = await admin_get(gw, "/admin/ledger")
    assert {r["id"]: r["batch_id"] for r in listed["data"] if r["batch_id"] == batch.id} == {
        rid: batch.id for rid in batch.row_ids[:3]}


async def test_a_line_refused_early_gives_its_hold_back_and_a_line_run_again_counts_once(
        gw: Gateway) -> None:
    batch = Batch(gw, 2)
    await batch.create()
    refused = await batch.chat(0, model="no-such-model")  # refused before step 10
    assert refused.usd == 0 and await batch.level() == WORST
    first = await batch.chat(1)
    # Run again under its row id (after a crash of its runner): billed once, one row.
    again = await batch.chat(1)
    assert again.usd > 0 and await batch.level() == first.usd
    rows = await batch.rows()
    assert [(r.id, r.outcome, r.status, r.cost_usd) for r in rows] == [
        (batch.row_ids[0], "refused", 404, 0.0), (batch.row_ids[1], "ok", 200, first.usd)]
    if gw.config.store.shared:  # the line's one row, in PostgreSQL itself
        conn = await asyncpg.connect(gw.config.store.postgres_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM ledger WHERE id = $1",
                                       batch.row_ids[1]) == 1
        finally:
            await conn.close()


async def test_a_batch_that_cannot_fit_is_refused_before_any_line_runs(gw: Gateway) -> None:
    batch = Batch(gw, 65)  # 65 lines of 1/64 dollar: one more than the dollar a day
    with pytest.raises(BudgetExceeded) as got:
        await batch.create()
    assert got.value.status == 429 and got.value.budget == batch.budget
    assert "has $1 left, and this request could use up to $1.015625" in got.value.message
    assert "over its 65 lines" in got.value.message
    assert await batch.level() == 0.0  # the 64 holds taken were given back


async def test_a_line_answered_from_the_cache_takes_no_rate_limit_and_costs_nothing(
        gw: Gateway) -> None:
    batch = Batch(gw, 2)
    await batch.create()
    asked = f"The same question, twice ({batch.id})."
    first = await batch.chat(0, model="sim-cached", text=asked)
    assert gw.cache is not None
    await gw.cache.drain()
    await interactive(gw, batch)  # the address's one request a minute, taken
    hit = await batch.chat(1, model="sim-cached", text=asked)
    assert hit.usd == 0 and hit.saved_usd == first.usd
    assert await batch.level() == first.usd  # line 1's hold given back at 0
    assert [r.cache for r in await batch.rows()] == ["miss", "hit"]
