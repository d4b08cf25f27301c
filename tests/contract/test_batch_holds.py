"""A batch's prepaid budget holds, on the real budget stores (memory, as the embedded
store keeps them; Redis under a key prefix of the test's own): every line's worst case
held when the batch is created, all or none; a line run settling its own hold to its
real cost without reserving again; the holds of lines that never ran given back; a
line settled twice counted once. Worst cases are binary fractions, so every level is
exact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest

from tests.contract.conftest import drop_prefix, new_prefix, open_redis
from tests.unit.fakes import outages, usage
from tollway.accounting import settlement
from tollway.accounting.settlement import Answered, Releases, Settlement
from tollway.config import Config, parse
from tollway.errors import BudgetExceeded
from tollway.policy import budget
from tollway.policy.admission import Admitter, LineHold
from tollway.policy.auth import Caller
from tollway.store.base import BudgetStore, Store
from tollway.store.memory import MemoryBudgets
from tollway.types import Answer, Deployment, Reply

NOW = 1_800_000_000.0
EXPIRES = NOW + 86_400  # the batch's expiry
CONFIG: Config = parse({
    "models": {"m": {"deployments": [{"provider": "local", "model": "x"}]}},
    "budgets": {"global": [{"usd": 1.0, "period": "day"}, {"tokens": 10_000, "period": "day"}]},
}, env={})
ANSWERED = Answered(Answer(Deployment(provider="fake", model="x"), reply=Reply({}, "x", None)))


@dataclass
class Parts:
    """The store parts admission uses."""

    budgets: BudgetStore
    limits: Any = None
    fallback_limits: Any = None


@pytest.fixture(params=["memory", "redis"])
async def admitter(request: pytest.FixtureRequest) -> AsyncIterator[Admitter]:
    o, _ = outages()
    if request.param == "memory":
        yield Admitter(CONFIG, cast(Store, Parts(MemoryBudgets())), o)
        return
    prefix = new_prefix()
    r = await open_redis(prefix)
    try:
        yield Admitter(CONFIG, cast(Store, Parts(r.budgets)), o)
    finally:
        await drop_prefix(r, prefix)
        await r.close()


def applied(adm: Admitter) -> list[budget.Applied]:
    return adm.budgets(Caller(), None, NOW)


def lines(adm: Admitter, *worst: tuple[float, int], batch: str = "b1") -> list[LineHold]:
    return [LineHold(f"row_b_{batch}_{i}", applied(adm), usd, tokens)
            for i, (usd, tokens) in enumerate(worst)]


async def levels(adm: Admitter) -> list[float]:
    return await adm.store.budgets.levels([a.counter for a in applied(adm)], NOW)


async def run_line(adm: Admitter, hold_id: str, spent: Settlement) -> None:
    """A batch's line, as the pipeline runs it: admitted prepaid, its budgets named at
    step 10, then finished with what it cost."""
    releases = Releases()
    out = adm.prepaid(hold_id, releases)
    adm.charge(out, applied(adm))
    assert out.held == applied(adm) and out.ticket is None  # no rate limit taken
    await releases.unwind(ANSWERED, spent, hold_id)


async def test_a_batch_is_held_whole_or_refused_whole(admitter: Admitter) -> None:
    usd_counter = applied(admitter)[0].counter
    await admitter.store.budgets.add(usd_counter, 0.125)  # spent before
    await admitter.hold_many(lines(admitter, *[(0.25, 1000)] * 3), EXPIRES, NOW)
    assert await levels(admitter) == [0.875, 3000]

    # Two lines fit, the third does not: the two are given back, and the refusal says
    # what is left without them against what the whole batch needs.
    with pytest.raises(BudgetExceeded) as got:
        await admitter.hold_many(lines(admitter, (0.0625, 10), (0.0625, 10), (0.25, 10),
                                       batch="b2"), EXPIRES, NOW)
    assert await levels(admitter) == [0.875, 3000]
    err = got.value
    assert err.budget == applied(admitter)[0] and err.status == 429
    assert err.remaining == 0.125
    assert "the global daily dollar budget ($1) has $0.125 left" in err.message
    assert "could use up to $0.375" in err.message
    assert "This batch's worst case is $0.375 (30 tokens) over its 3 lines" in err.message

    # What the refused batch held is free again: a request may take all that is left.
    await admitter.hold_many(lines(admitter, (0.125, 10), batch="b3"), EXPIRES, NOW)
    assert await levels(admitter) == [1.0, 3010]


async def test_a_batch_past_a_token_budget_is_refused_in_tokens(admitter: Admitter) -> None:
    with pytest.raises(BudgetExceeded) as got:
        await admitter.hold_many(lines(admitter, *[(0.001, 4000)] * 3), EXPIRES, NOW)
    assert got.value.budget == applied(admitter)[1]
    assert ("the global daily token budget (10000 tokens) has 10000 tokens left, and this "
            "request could use up to 12000 tokens") in got.value.message
    assert await levels(admitter) == [0.0, 0.0]


async def test_a_line_settles_its_real_cost_and_releases_its_hold(admitter: Admitter) -> None:
    batch = lines(admitter, *[(0.25, 1000)] * 3)
    await admitter.hold_many(batch, EXPIRES, NOW)
    assert await levels(admitter) == [0.75, 3000]
    await run_line(admitter, batch[0].hold_id, Settlement(usage(100, 20), 0.0625))
    # Its hold (0.25, 1000) gone, its cost in: nothing reserved a second time.
    assert await levels(admitter) == [0.0625 + 0.5, 120 + 2000]
    assert set(admitter.held.holds) == {batch[1].hold_id, batch[2].hold_id}


async def test_a_line_ended_before_its_budgets_were_named_gives_its_hold_back(
        admitter: Admitter) -> None:
    """A line refused by routing or its input, or answered from the cache, costs 0."""
    batch = lines(admitter, *[(0.25, 1000)] * 2)
    await admitter.hold_many(batch, EXPIRES, NOW)
    releases = Releases()
    admitter.prepaid(batch[0].hold_id, releases)
    await releases.unwind(ANSWERED, settlement.ZERO, "line 0")
    assert await levels(admitter) == [0.25, 1000]


async def test_releasing_the_lines_not_run_leaves_exactly_what_the_others_cost(
        admitter: Admitter) -> None:
    batch = lines(admitter, *[(0.25, 1000)] * 4)
    await admitter.hold_many(batch, EXPIRES, NOW)
    await run_line(admitter, batch[0].hold_id, Settlement(usage(100, 20), 0.0625))
    await run_line(admitter, batch[1].hold_id, Settlement(usage(7, 3), 0.03125))
    await admitter.release_many(line.hold_id for line in batch)  # the batch is cancelled
    assert await levels(admitter) == [0.0625 + 0.03125, 130]
    assert admitter.held.holds == {}


async def test_a_line_run_again_is_counted_once(admitter: Admitter) -> None:
    """Run again after a crash, a line settles the same hold a second time: the store
    keeps the first settle, so the budgets count it once."""
    batch = lines(admitter, *[(0.25, 1000)] * 2)
    await admitter.hold_many(batch, EXPIRES, NOW)
    await run_line(admitter, batch[0].hold_id, Settlement(usage(100, 20), 0.0625))
    await run_line(admitter, batch[0].hold_id, Settlement(usage(100, 60), 0.125))
    assert await levels(admitter) == [0.0625 + 0.25, 120 + 1000]
