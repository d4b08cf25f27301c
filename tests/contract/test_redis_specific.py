"""What the contract suite cannot see about the Redis store: atomicity across
replicas (separate clients, separate pools), the server's clock, TTLs that bound
memory, the key layout, and exact agreement with the in-memory reference."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis
from redis.crc import key_slot

from tests.contract.conftest import REDIS_URL, drop_prefix, new_prefix, open_redis
from tollway.store.base import Claim, LiveHold
from tollway.store.memory import MemoryBudgets, MemoryLimits
from tollway.store.redis import RedisStore, counter_ttl

Opener = Callable[..., Awaitable[RedisStore]]


@pytest.fixture
async def replicas() -> AsyncIterator[Opener]:
    """Opens RedisStores sharing one fresh key prefix, each with its own pool (like
    replicas of one fleet)."""
    prefix = new_prefix()
    opened: list[RedisStore] = []

    async def open_one(*, use_server_time: bool = False) -> RedisStore:
        r = await open_redis(prefix, use_server_time=use_server_time)
        opened.append(r)
        return r

    yield open_one
    if opened:
        await drop_prefix(opened[0], prefix)
    for r in opened:
        await r.close()


async def _keys(r: RedisStore) -> list[str]:
    """The prefix's keys but the mark that its counters are current (it lives as long as
    they do)."""
    current = f"{r.prefix}{{b}}:current"
    return sorted([k.decode() async for k in r.client.scan_iter(match=f"{r.prefix}*")
                   if k.decode() != current])


# Atomic across replicas.

async def test_two_replicas_never_overshoot_a_budget(replicas: Opener) -> None:
    a, b = await replicas(), await replicas()
    assert a.client.connection_pool is not b.client.connection_pool

    async def one(i: int) -> bool:
        store = (a, b)[i % 2]
        got = await store.budgets.reserve(f"h{i}", [Claim("k", 10, 1)], 1e12, 0)
        return got.refused is None

    admitted = await asyncio.gather(*(one(i) for i in range(300)))
    assert sum(admitted) == 10
    assert await a.budgets.levels(["k"], 0) == await b.budgets.levels(["k"], 0) == [10]


async def test_two_replicas_never_overshoot_a_rate_limit(replicas: Opener) -> None:
    a, b = await replicas(), await replicas()

    async def one(i: int) -> bool:
        store = (a, b)[i % 2]
        got = await store.limits.take(f"e{i}", [Claim("rpm", 10, 1)], 60, 0)
        return got.refused is None

    assert sum(await asyncio.gather(*(one(i) for i in range(300)))) == 10


async def test_a_second_settle_is_refused_from_another_replica(replicas: Opener) -> None:
    a, b = await replicas(), await replicas()
    await a.budgets.reserve("h1", [Claim("usd", 1, 0.5)], 1e12, 0)
    assert await a.budgets.settle("h1", [("usd", 0.25)]) is True
    assert await b.budgets.settle("h1", [("usd", 0.25)]) is False
    assert await b.budgets.levels(["usd"], 0) == [0.25]


async def test_concurrent_settles_of_one_hold_count_once(replicas: Opener) -> None:
    a, b = await replicas(), await replicas()
    await a.budgets.reserve("h1", [Claim("usd", 1, 0.5)], 1e12, 0)
    won = await asyncio.gather(*((a, b)[i % 2].budgets.settle("h1", [("usd", 0.25)])
                                 for i in range(50)))
    assert sum(won) == 1
    assert await a.budgets.levels(["usd"], 0) == [0.25]


async def test_a_retried_reserve_holds_once(replicas: Opener) -> None:
    r = await replicas()
    assert (await r.budgets.reserve("h1", [Claim("c", 10, 4)], 1e12, 0)).levels == [4]
    assert (await r.budgets.reserve("h1", [Claim("c", 10, 4)], 1e12, 0)).levels == [4]
    assert await r.budgets.levels(["c"], 0) == [4]


async def test_a_retried_take_counts_once(replicas: Opener) -> None:
    r = await replicas()
    await r.limits.take("e1", [Claim("tok", 100, 30)], 60, 0)
    await r.limits.take("e1", [Claim("tok", 100, 30)], 60, 1)
    assert (await r.limits.take("e2", [Claim("tok", 100, 1)], 60, 2)).levels == [31]


# The server's clock.

async def test_server_time_expires_holds_whatever_the_callers_clock_says(
        replicas: Opener) -> None:
    r = await replicas(use_server_time=True)
    # A caller whose clock is far ahead: its hold lives 60 s of server time, not 0.
    await r.budgets.reserve("ahead", [Claim("c", 10, 3)], expires_at=1e12 + 60, now=1e12)
    assert await r.budgets.levels(["c"], now=1e12 + 3600) == [3]
    # A caller whose clock is far behind: its 0.2 s hold expires after 0.2 s.
    await r.budgets.reserve("behind", [Claim("c", 10, 5)], expires_at=0.2, now=0)
    assert await r.budgets.levels(["c"], now=0) == [8]
    await asyncio.sleep(0.3)
    assert await r.budgets.levels(["c"], now=0) == [3]
    assert (await r.budgets.reserve("h", [Claim("c", 10, 7)], 1e12, now=0)).levels == [10]


async def test_server_time_records_limit_entries_at_the_servers_now(replicas: Opener) -> None:
    r = await replicas(use_server_time=True)
    before = time.time()
    await r.limits.take("e1", [Claim("rpm", 1, 1)], 60, now=5.0)  # a wildly wrong clock
    t = await r.client.zscore(f"{r.prefix}{{l}}:log:rpm", "e1")
    assert t is not None and before - 1 <= t <= time.time() + 1
    # free_at answers on the caller's clock: about a window after its now.
    assert 64 <= await r.limits.free_at("rpm", 1, 1, 60, now=5.0) <= 65.1
    assert await r.limits.free_at("other", 1, 1, 60, now=5.0) == 5.0


async def test_server_time_slides_entries_out(replicas: Opener) -> None:
    r = await replicas(use_server_time=True)
    assert (await r.limits.take("e1", [Claim("rpm", 1, 1)], 0.2, now=0)).refused is None
    assert (await r.limits.take("e2", [Claim("rpm", 1, 1)], 0.2, now=0)).refused == 0
    await asyncio.sleep(0.3)
    assert (await r.limits.take("e3", [Claim("rpm", 1, 1)], 0.2, now=0)).refused is None


# Bounded memory: TTLs and cleanup.

def test_budget_counter_ttls_follow_their_window() -> None:
    assert counter_ttl("key/key_ab12/usd/d20261122") == 2 * 86400
    assert counter_ttl("team/t1/tokens/m202611") == 62 * 86400
    assert counter_ttl("global//usd/h2026112213") == 86400
    assert counter_ttl("key/key_ab12/usd/total") == 0
    assert counter_ttl("odd/name") == 0


async def test_keys_carry_ttls(replicas: Opener) -> None:
    r = await replicas()
    spent = f"{r.prefix}{{b}}:spent:"
    counters = ["k/a/usd/d20261122", "k/a/usd/m202611", "k/a/usd/total"]
    await r.budgets.reserve("h1", [Claim(c, 10, 1) for c in counters], expires_at=900, now=0)
    await r.budgets.settle("h1", [(c, 0.5) for c in counters])
    await r.budgets.add("global//usd/h2026112213", 1)
    assert 2 * 86400 - 5 <= await r.client.ttl(spent + counters[0]) <= 2 * 86400
    assert 62 * 86400 - 5 <= await r.client.ttl(spent + counters[1]) <= 62 * 86400
    assert await r.client.ttl(spent + counters[2]) == -1  # a total never rolls over
    assert 86400 - 5 <= await r.client.ttl(spent + "global//usd/h2026112213") <= 86400
    # A second write keeps the TTL the counter was created with.
    await r.client.expire(spent + counters[0], 1000)
    await r.budgets.add(counters[0], 1)
    assert 995 <= await r.client.ttl(spent + counters[0]) <= 1000
    # The settle mark lives as long as the hold would have; the hold itself is gone.
    assert 895 <= await r.client.ttl(f"{r.prefix}{{b}}:settled:h1") <= 900
    assert [k for k in await _keys(r) if ":spent:" not in k] == [
        f"{r.prefix}{{b}}:settled:h1"]

    await r.limits.take("e1", [Claim("rpm", 10, 1)], 60, now=0)
    for kind in ("log", "amt", "sum"):
        assert 59_000 <= await r.client.pttl(f"{r.prefix}{{l}}:{kind}:rpm") <= 60_000

    until = time.time() + 3600
    assert await r.once.first("alert/x", until) is True
    assert await r.client.pexpiretime(f"{r.prefix}once:alert/x") == math.ceil(until * 1000)
    assert await r.once.first("alert/forever", math.inf) is True
    assert await r.client.ttl(f"{r.prefix}once:alert/forever") == -1


async def test_limit_counters_vanish_a_window_after_their_last_entry(replicas: Opener) -> None:
    r = await replicas(use_server_time=True)
    await r.limits.take("e1", [Claim("rpm", 10, 1)], 0.1, now=0)
    assert len(await _keys(r)) == 3
    await asyncio.sleep(0.25)
    assert await _keys(r) == []


async def test_expired_holds_are_swept_and_leave_nothing_behind(replicas: Opener) -> None:
    r = await replicas()
    for i in range(20):
        await r.budgets.reserve(f"h{i}", [Claim("a", 100, 1), Claim("b", 100, 2)], 10, 0)
    assert len(await _keys(r)) == 22  # 20 holds, the expiry index, the held amounts
    assert await r.budgets.levels(["a", "b"], 10) == [0, 0]
    assert await _keys(r) == []


async def test_an_entry_that_slid_out_leaves_its_counter_empty(replicas: Opener) -> None:
    r = await replicas()
    await r.limits.take("e1", [Claim("c", 10, 0.1), Claim("d", 10, 0.7)], 60, 0)
    await r.limits.take("e2", [Claim("c", 10, 0.2)], 60, 1)
    assert await r.limits.free_at("c", 10, 10, 60, 61) == 61
    assert await r.limits.free_at("d", 10, 10, 60, 61) == 61
    assert await _keys(r) == []


# After Redis lost the counters (restarted empty, failed over, flushed).

async def _lose_everything(r: RedisStore) -> None:
    await drop_prefix(r, r.prefix)  # as FLUSHALL would, for this prefix only


async def test_without_the_mark_a_reserve_takes_nothing_and_says_stale(
        replicas: Opener) -> None:
    r = await replicas()
    await _lose_everything(r)
    got = await r.budgets.reserve("h1", [Claim("c", 10, 1)], 1e12, 0)
    assert got.stale and got.refused is None
    assert await r.budgets.levels(["c"], 0) == [0.0] and await _keys(r) == []


async def test_a_settle_while_stale_still_charges_and_is_recorded_as_lost(
        replicas: Opener) -> None:
    r = await replicas()
    await r.budgets.reserve("h1", [Claim("c", 10, 4)], 1e12, 0)
    await _lose_everything(r)
    assert await r.budgets.settle("h1", [("c", 1.5)]) is True
    assert await r.budgets.settle("h2", [("c", 0.0)]) is True
    assert await r.budgets.levels(["c"], 0) == [1.5]
    assert await r.budgets.lost_settles() == {"h1", "h2"}


async def test_one_replica_at_a_time_holds_the_rebuild_lease(replicas: Opener) -> None:
    one, two = await replicas(), await replicas()
    await _lose_everything(one)
    assert await one.budgets.claim_rebuild("t1", 60) == "mine"
    assert await two.budgets.claim_rebuild("t2", 60) == "busy"
    assert await one.budgets.claim_rebuild("t1", 60) == "mine"  # renewed
    assert await two.budgets.commit_rebuild("t2", [("c", 1.0)]) is False
    assert await one.budgets.levels(["c"], 0) == [0.0]  # a commit without the lease: nothing
    await two.budgets.release_rebuild("t2")  # not its lease: no effect
    assert await two.budgets.claim_rebuild("t2", 60) == "busy"
    await one.budgets.release_rebuild("t1")
    assert await two.budgets.claim_rebuild("t2", 60) == "mine"
    assert await two.budgets.commit_rebuild("t2", []) is True
    assert await one.budgets.claim_rebuild("t1", 60) == "current"
    assert (await one.budgets.reserve("h", [Claim("c", 1, 1)], 1e12, 0)).stale is False


async def test_a_rebuild_raises_counters_to_the_ledger_plus_what_was_settled_since(
        replicas: Opener) -> None:
    """max(level, settled since the loss + the ledger's figure): exact after a loss, and
    no double count where a counter survived (only the mark was lost)."""
    r = await replicas()
    b = r.budgets
    await b.settle("s0", [("kept/usd/total", 5.0)])  # survives: the mark alone goes
    await r.client.delete(f"{r.prefix}{{b}}:current")
    await b.settle("s1", [("late/usd/d20261122", 1.0)])  # settled after the loss
    assert await b.claim_rebuild("t", 60) == "mine"
    ledger = [("kept/usd/total", 3.0), ("late/usd/d20261122", 4.0), ("new/usd/total", 2.0)]
    assert await b.commit_rebuild("t", ledger) is True
    assert await b.levels([c for c, _ in ledger], 0) == [5.0, 5.0, 2.0]
    assert await r.client.ttl(f"{r.prefix}{{b}}:spent:late/usd/d20261122") >= 2 * 86400 - 5
    assert await b.lost_settles() == set()  # the loss's records go with the rebuild


async def test_restore_puts_back_only_the_holds_that_were_lost(replicas: Opener) -> None:
    r = await replicas()
    b = r.budgets
    await b.reserve("h1", [Claim("c", 10, 2), Claim("d", 10, 1)], 100, 0)
    await _lose_everything(r)
    await b.settle("h2", [("c", 0.5)])  # its request finished while the store was empty
    holds = [LiveHold("h1", [Claim("c", 10, 2), Claim("d", 10, 1)], 100),
             LiveHold("h2", [Claim("c", 10, 3)], 100),  # settled: not put back
             LiveHold("h3", [Claim("c", 10, 4)], 5)]  # expired by now
    await b.restore(holds, now=10)
    await b.restore(holds, now=10)  # again: nothing twice
    assert await b.levels(["c", "d"], 10) == [2.5, 1.0]
    assert await b.settle("h1", [("c", 1.0), ("d", 0.0)]) is True
    assert await b.levels(["c", "d"], 10) == [1.5, 0.0]
    assert await b.levels(["c"], 101) == [1.5]


# Layout and scripts.

async def test_every_script_touches_one_cluster_slot(replicas: Opener) -> None:
    r = await replicas()
    await r.budgets.reserve("h1", [Claim("k/1/usd/total", 9, 1), Claim("t/2/usd/d20260101", 9, 1)],
                            1e12, 0)
    await r.budgets.settle("h0", [("k/1/usd/total", 1)])
    await r.limits.take("e1", [Claim("rate/key/a/requests", 9, 1),
                               Claim("rate/model/{x}/tokens", 9, 1)], 60, 0)
    keys = await _keys(r)
    for tag in ("{b}", "{l}"):
        tagged = [k for k in keys if f":{tag}:" in k]
        assert len(tagged) >= 3
        assert len({key_slot(k.encode()) for k in tagged}) == 1
    assert all(k.startswith("twtest:") and ":v1:" in k for k in keys)


async def test_open_loads_the_scripts_by_sha(replicas: Opener) -> None:
    r = await replicas()
    shas = [s.sha for s in vars(r._scripts).values()]
    assert len(set(shas)) == 12
    assert await r.client.script_exists(*shas) == [True] * 12


async def test_errors_propagate() -> None:
    dead = RedisStore("redis://127.0.0.1:1/0", timeout=0.5)
    try:
        with pytest.raises(redis.ConnectionError):
            await dead.open()
        with pytest.raises(redis.ConnectionError):
            await dead.budgets.reserve("h", [Claim("c", 1, 1)], 1e12, 0)
    finally:
        await dead.close()
    assert REDIS_URL  # the live server is another matter: see the fixtures


# Exact agreement with the in-memory reference, float for float.

async def test_budgets_agree_with_memory_exactly(replicas: Opener) -> None:
    r, mem, rnd = await replicas(), MemoryBudgets(), random.Random(7)
    counters = ["a", "b", "c"]
    open_holds: list[str] = []
    now = 0.0
    for i in range(400):
        now += rnd.choice([0.0, 0.5, 3.0])
        op = rnd.random()
        if op < 0.5:
            claims = [Claim(c, 5.0, round(rnd.uniform(0, 1.5), 3))
                      for c in rnd.sample(counters, rnd.randint(1, 3))]
            exp = now + rnd.choice([2.0, 10.0, 1e9])
            got = await r.budgets.reserve(f"h{i}", claims, exp, now)
            assert got == await mem.reserve(f"h{i}", claims, exp, now)
            open_holds.append(f"h{i}")
        elif op < 0.8 and open_holds:
            hold = open_holds.pop(rnd.randrange(len(open_holds)))
            charges = [(c, rnd.choice([0.0, round(rnd.uniform(0, 1), 4)])) for c in counters]
            assert await r.budgets.settle(hold, charges) == await mem.settle(hold, charges)
        else:
            assert await r.budgets.levels(counters, now) == await mem.levels(counters, now)
    assert await r.budgets.add("a", 0.1) == await mem.add("a", 0.1)


async def test_limits_agree_with_memory_exactly(replicas: Opener) -> None:
    r, mem, rnd = await replicas(), MemoryLimits(), random.Random(11)
    counters = ["req", "tok", "ip"]
    now = 100.0
    for i in range(400):
        now += rnd.choice([0.01, 0.3, 2.7, 9.1])
        op = rnd.random()
        if op < 0.5:
            claims = [Claim(c, 50.0, round(rnd.uniform(0, 9), 2))
                      for c in rnd.sample(counters, rnd.randint(1, 3))]
            assert (await r.limits.take(f"e{i}", claims, 30, now)
                    == await mem.take(f"e{i}", claims, 30, now))
        elif op < 0.7:
            entry = f"e{rnd.randrange(i + 1)}"
            amounts = [(c, round(rnd.uniform(0, 9), 2)) for c in counters]
            await r.limits.adjust(entry, amounts)
            await mem.adjust(entry, amounts)
        else:
            c, need = rnd.choice(counters), rnd.choice([1.0, 12.5, 49.0, 51.0])
            assert (await r.limits.free_at(c, need, 50, 30, now)
                    == await mem.free_at(c, need, 50, 30, now))
