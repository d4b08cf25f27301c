"""Budget counters rebuilt from the ledger after Redis lost them, on the real stores
(a Redis key prefix of the test's own, a PostgreSQL scratch database): two replicas'
admissions run side by side with an in-memory reference that loses nothing, and
after the loss and the rebuild every current counter holds what the reference holds —
settled spend (read from the ledger), holds still running (put back by the replica
that took them), settles that landed during the rebuild (counted once)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest

from tests.contract.conftest import ScratchPostgres, drop_prefix, new_prefix, open_redis
from tests.unit.fakes import outages, usage
from tollway.accounting.rows import LedgerRow
from tollway.accounting.settlement import Aborted, Releases, Settlement
from tollway.config import Config, parse
from tollway.keys import KeyRecord, mint
from tollway.policy import recovery
from tollway.policy.admission import Admission, Admitter
from tollway.policy.auth import Caller
from tollway.policy.recovery import BudgetRecovery, Held
from tollway.store.base import BudgetStore, KeyStore, LedgerStore, Store
from tollway.store.memory import MemoryBudgets
from tollway.store.postgres import PostgresStore
from tollway.store.redis import RedisStore

NOW = 1_800_000_000.0  # mid-January 2027: rows of today, of the month, and before
DAY = 86_400.0
CONFIG: Config = parse({
    "models": {"m": {"deployments": [{"provider": "local", "model": "x"}]}},
    "budgets": {
        "global": [{"usd": 1e6, "period": "total"}, {"tokens": 10**12, "period": "day"}],
        "teams": {"red": [{"usd": 1e6, "period": "month"}]},
        "users": {"*": [{"usd": 1e6, "period": "day"}]},
        "features": {"search": [{"tokens": 10**12, "period": "total"}]},
        "conversations": [{"usd": 1e6, "period": "total"}]}}, env={})


@dataclass
class Parts:
    """The store parts admission and recovery use."""

    budgets: BudgetStore
    keys: KeyStore
    ledger: LedgerStore
    limits: Any = None
    fallback_limits: Any = None


class Replica:
    """One replica's admission and recovery on the real stores, and a reference
    admission of the same requests on memory that loses nothing."""

    def __init__(self, r: RedisStore, pg: PostgresStore, reference: MemoryBudgets) -> None:
        o, _ = outages()
        held = Held()
        parts = cast(Store, Parts(r.budgets, pg.keys, pg.ledger))
        self.pg = pg
        self.admitter = Admitter(CONFIG, parts, o, held)
        self.reference = Admitter(CONFIG, cast(Store, Parts(reference, pg.keys, pg.ledger)), o)
        self.recovery = BudgetRecovery(CONFIG, parts, held, self.flush, clock=lambda: NOW)
        self.buffered: list[LedgerRow] = []  # rows its ledger writer has not written
        self.running: list[tuple[Releases, Releases, LedgerRow, Settlement]] = []

    async def flush(self) -> None:
        rows, self.buffered = self.buffered, []
        await self.pg.ledger.append(rows)


@pytest.fixture
async def stores(postgres: ScratchPostgres) -> AsyncIterator[tuple[list[RedisStore],
                                                                   PostgresStore]]:
    prefix = new_prefix()
    redis = [await open_redis(prefix), await open_redis(prefix)]
    pg = PostgresStore(await postgres.shared())
    await pg.open()
    try:
        yield redis, pg
    finally:
        await drop_prefix(redis[0], prefix)
        for r in redis:
            await r.close()
        await pg.close()


def callers(keys: list[KeyRecord]) -> list[tuple[Caller, str | None]]:
    out: list[tuple[Caller, str | None]] = []
    for key in [None, *keys]:
        for team in [None, "red", "blue"]:
            for user in [None, "ann", "bo\x00b"]:  # a NUL: the ledger keeps U+FFFD
                for feature in [None, "search"]:
                    caller = Caller(key=key, team=team, user=user, feature=feature)
                    out += [(caller, None), (caller, "conv-1")]
    return out


def row_of(caller: Caller, conversation: str | None, rid: str, ts: float, s: Settlement
           ) -> LedgerRow:
    """The request's ledger row, with the fields gateway/record.py fills from it."""
    assert s.usage is not None
    return LedgerRow(
        id=rid, request_id=rid, ts=ts, status=200, outcome="ok",
        key_id=caller.key.id if caller.key is not None else None,
        key_lineage=caller.key.lineage if caller.key is not None else None,
        user=caller.user, team=caller.team, feature=caller.feature,
        conversation=conversation,
        conversation_owner=caller.owner if conversation is not None else None,
        input_tokens=s.usage.prompt_tokens, output_tokens=s.usage.completion_tokens,
        cost_usd=s.usd)


async def request(rep: Replica, caller: Caller, conversation: str | None, rid: str,
                  now: float, rnd: random.Random) -> None:
    """Admitted on both, then left running (settled later by `finish`)."""
    applied = rep.admitter.budgets(caller, conversation, now)
    mine, theirs = Releases(), Releases()
    await rep.admitter.admit(Admission(), [], applied, 0.5, 900, now, mine, rid)
    await rep.reference.admit(Admission(), [], applied, 0.5, 900, now, theirs, rid)
    s = Settlement(usage(rnd.randrange(1, 300), rnd.randrange(0, 600)),
                   round(rnd.uniform(0, 0.5), 6))
    rep.running.append((mine, theirs, row_of(caller, conversation, rid, now, s), s))


async def finish(rep: Replica, n: int | None = None) -> None:
    """Settle the oldest `n` running requests (all by default); their rows are buffered."""
    done, rep.running = rep.running[:n], rep.running[len(rep.running[:n]):]
    for mine, theirs, row, s in done:
        await mine.unwind(Aborted(), s, row.id)
        await theirs.unwind(Aborted(), s, row.id)
        rep.buffered.append(row)


async def levels(counters: list[str], store: BudgetStore) -> list[float]:
    return await store.levels(counters, NOW)


async def test_two_replicas_rebuild_every_current_counter_exactly(
        stores: tuple[list[RedisStore], PostgresStore], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    monkeypatch.setattr(recovery, "GRACE", 0.2)
    (ra, rb), pg = stores
    reference = MemoryBudgets()
    a, b = Replica(ra, pg, reference), Replica(rb, pg, reference)
    _, key = mint(NOW, budgets=[{"usd": 1e6, "period": "day"}])
    _, rotated = mint(NOW, lineage=key.lineage, budgets=[{"tokens": 10**12, "period": "total"}])
    for k in (key, rotated):
        await pg.keys.put(k)
    who, rnd = callers([key, rotated]), random.Random(5)

    # The past (earlier today, earlier this month, last year), settled, in the ledger.
    for i in range(240):
        rep = (a, b)[i % 2]
        ago = rnd.choice([0.0, 3600.0, 5 * DAY, 400 * DAY])
        await request(rep, *rnd.choice(who), f"row_past{i}", NOW - ago, rnd)
        await finish(rep)
    for rep in (a, b):
        await rep.flush()
    # Now: some settled but not yet written, some still running.
    for i in range(60):
        await request((a, b)[i % 2], *rnd.choice(who), f"row_now{i}", NOW, rnd)
    await finish(a, 10)
    await finish(b, 10)
    counters = sorted({x.counter for caller, conv in who
                       for x in a.admitter.budgets(caller, conv, NOW)})
    before = await levels(counters, reference)
    assert await levels(counters, ra.budgets) == pytest.approx(before, rel=1e-12)

    await drop_prefix(ra, ra.prefix)  # Redis loses everything
    await finish(a, 5)  # settled while the counters are gone (their rows written)
    await a.flush()
    await asyncio.gather(a.recovery.check(), b.recovery.check())
    assert a.recovery.rebuilds + b.recovery.rebuilds == 1  # one rebuild for the fleet
    assert a.recovery.state == "current"
    assert await levels(counters, ra.budgets) == pytest.approx(
        await levels(counters, reference), rel=1e-9, abs=1e-9)

    await finish(a)  # the holds that were put back are released like any other
    await finish(b)
    assert await levels(counters, rb.budgets) == pytest.approx(
        await levels(counters, reference), rel=1e-9, abs=1e-9)
    assert all(lvl > 0 for lvl in await levels(counters, reference))
