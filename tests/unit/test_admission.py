"""Admission: which budgets and rate limits apply, taking them, and giving them back with
the real figures — on the in-memory store parts, with parts that are down or that hold
a reserve open until the test lets it go."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from tests.unit.fakes import Down, outages, usage
from tollway.accounting import settlement
from tollway.accounting.settlement import Aborted, Failed, Releases, Settlement
from tollway.config import Budget, Config, parse
from tollway.errors import BudgetExceeded, Unavailable
from tollway.keys import KeyRecord
from tollway.policy import budget
from tollway.policy.admission import Admission, Admitter, LineHold
from tollway.policy.auth import Caller
from tollway.policy.recovery import RETRY_AFTER, BudgetRecovery
from tollway.store.base import BudgetStore, Claim, LimitStore, Reservation, Store
from tollway.store.memory import MemoryBudgets, MemoryLimits

NOW = 1_800_000_000.0
SPENT = Settlement(usage(100, 20), 0.5)  # what the request turned out to cost


def key(kid: str = "key_a", **kw: Any) -> KeyRecord:
    return KeyRecord(id=kid, hint="tw-abc…wxyz", created_at=0, lineage=kid, hash="h", **kw)


@dataclass
class Parts:
    """The store parts admission uses (it touches no other part of a `Store`)."""

    budgets: BudgetStore = field(default_factory=MemoryBudgets)
    limits: LimitStore = field(default_factory=MemoryLimits)
    fallback_limits: LimitStore = field(default_factory=MemoryLimits)


class Watched:
    """In-memory budgets that record each hold asked for and each settle, and whose
    reserve, when `gated`, waits for `go` once the store has been asked."""

    def __init__(self, gated: bool = False) -> None:
        self.inner = MemoryBudgets()
        self.asked, self.go = asyncio.Event(), asyncio.Event()
        if not gated:
            self.go.set()
        self.holds: list[str] = []
        self.settled: list[tuple[str, list[tuple[str, float]]]] = []

    async def reserve(self, hold_id: str, claims: Sequence[Claim], expires_at: float,
                      now: float) -> Reservation:
        self.holds.append(hold_id)
        self.asked.set()
        await self.go.wait()
        return await self.inner.reserve(hold_id, claims, expires_at, now)

    async def settle(self, hold_id: str, charges: Sequence[tuple[str, float]]) -> bool:
        self.settled.append((hold_id, list(charges)))
        return await self.inner.settle(hold_id, charges)

    async def levels(self, counters: Sequence[str], now: float) -> list[float]:
        return await self.inner.levels(counters, now)

    async def add(self, counter: str, amount: float) -> float:
        return await self.inner.add(counter, amount)


def admitter(sections: dict[str, Any], parts: Parts | None = None
             ) -> tuple[Admitter, Parts, list[str]]:
    """An Admitter on `parts` and the store parts it counted as failed."""
    cfg: Config = parse({"models": {"m": {"deployments": [{"provider": "local",
                                                            "model": "x"}]}}, **sections},
                        env={})
    parts = parts or Parts()
    o, failed = outages()
    return Admitter(cfg, cast(Store, parts), o), parts, failed


async def level(limits: LimitStore, counter: str) -> float:
    """A rate-limit counter's level now (a take of nothing reads it)."""
    return (await limits.take("probe", [Claim(counter, math.inf, 0.0)], 60.0, NOW)).levels[0]


def counters(rate: list[Any]) -> dict[str, str]:
    return {lim.metric: lim.counter for lim in rate}


# Which budgets apply.

def test_no_budgets_configured_and_none_on_the_key_apply_none() -> None:
    adm, _, _ = admitter({})
    assert adm.budgets(Caller(), "conv-1", NOW) == []
    assert adm.budgets(Caller(key=key()), "conv-1", NOW) == []


def test_a_keys_own_budgets_apply_without_any_configured() -> None:
    adm, _, _ = admitter({})
    got = adm.budgets(Caller(key=key(budgets=[Budget(usd=5.0)])), None, NOW)
    assert [(a.scope, a.name, a.metric, a.limit) for a in got] == [("key", "key_a", "usd", 5.0)]


def test_conversation_budgets_are_counted_per_owner() -> None:
    adm, _, _ = admitter({"budgets": {"conversations": [{"tokens": 5000, "period": "total"}]}})
    alice = Caller(key=key(), user="alice")
    got = adm.budgets(alice, "conv-1", NOW)
    assert [a.counter for a in got] == ["conversation/key_a/alice|conv-1/tokens/total"]
    bob = adm.budgets(Caller(key=key(), user="bob"), "conv-1", NOW)
    assert bob[0].counter != got[0].counter  # one owner's id never shares another's counter
    assert adm.budgets(alice, None, NOW) == []  # no conversation: no conversation budget


# Which rate limits apply.

def test_ip_limits_apply_only_to_callers_without_a_key_who_are_not_master() -> None:
    adm, _, _ = admitter({"rate_limits": {"ips": {"rpm": 10}}})
    assert [lim.counter for lim in adm.rate_limits(Caller(ip="10.0.0.1"), "m")] == [
        "rate/ip/10.0.0.1/requests"]
    assert adm.rate_limits(Caller(ip="10.0.0.1", master=True), "m") == []
    assert adm.rate_limits(Caller(key=key(), ip="10.0.0.1"), "m") == []


# Admitting, and settling what was taken.

LIMITS = {"rate_limits": {"keys": {"rpm": 100, "tpm": 10_000}}}


async def test_a_ticket_is_taken_and_settled_to_the_tokens_used() -> None:
    adm, parts, _ = admitter(LIMITS)
    rate = adm.rate_limits(Caller(key=key()), "m")
    releases = Releases()
    got = Admission()
    await adm.admit(got, rate, [], 0.0, 500, NOW, releases, "row_1")
    assert got.ticket is not None and not got.ticket.local
    c = counters(rate)
    assert (await level(parts.limits, c["tokens"]), await level(parts.limits, c["requests"])
            ) == (500, 1)
    assert [what for what, _ in releases.pending] == ["rate-limit entry"]
    await releases.unwind(Aborted(), SPENT, "req")
    assert await level(parts.limits, c["tokens"]) == 120 and got.ticket.tokens == 120


BUDGETS = {"budgets": {"global": [{"usd": 10}, {"tokens": 1000}]}}


async def test_the_worst_case_is_held_then_settled_to_the_real_cost() -> None:
    adm, parts, _ = admitter(BUDGETS)
    applied = adm.budgets(Caller(), None, NOW)
    releases = Releases()
    got = Admission()
    await adm.admit(got, [], applied, 2.0, 300, NOW, releases, "row_2")
    assert got.held == applied and got.remaining_usd == 8.0 and got.ticket is None
    held = [a.counter for a in applied]
    assert await parts.budgets.levels(held, NOW) == [2.0, 300]
    await releases.unwind(Aborted(), SPENT, "req")
    assert await parts.budgets.levels(held, NOW) == [0.5, 120]


async def test_the_hold_is_released_even_when_cancelled_while_the_store_reserves() -> None:
    watched = Watched(gated=True)
    adm, _, _ = admitter(BUDGETS, Parts(budgets=watched))
    applied = adm.budgets(Caller(), None, NOW)
    releases = Releases()
    admit = asyncio.create_task(adm.admit(Admission(), [], applied, 2.0, 300, NOW, releases,
                                          "row_c"))
    await watched.asked.wait()
    assert [what for what, _ in releases.pending] == ["budget hold"]  # before the answer

    admit.cancel()  # the client left while the reserve was in flight
    with pytest.raises(asyncio.CancelledError):
        await admit
    await releases.unwind(Aborted(), settlement.ZERO, "req")
    (hold,) = watched.holds
    assert watched.settled == [(hold, [(a.counter, 0.0) for a in applied])]
    # The reserve reaching the store after the settle takes nothing.
    await watched.inner.reserve(hold, budget.claims(applied, 2.0, 300), NOW + 900, NOW)
    assert await watched.levels([a.counter for a in applied], NOW) == [0.0, 0.0]


@pytest.mark.parametrize("status", [429, 402])
async def test_a_refusal_raises_and_leaves_nothing_to_settle_on_budgets(status: int) -> None:
    watched = Watched()
    adm, parts, _ = admitter({**LIMITS, "budgets": {"global": [{"usd": 1}],
                                                    "refuse_status": status}},
                             Parts(budgets=watched))
    caller = Caller(key=key())
    applied, rate = adm.budgets(caller, None, NOW), adm.rate_limits(caller, "m")
    releases = Releases()
    admitted = Admission()
    with pytest.raises(BudgetExceeded) as got:
        await adm.admit(admitted, rate, applied, 2.0, 300, NOW, releases, "row_3")
    assert got.value.status == status and got.value.budget == applied[0]
    # The refusal's reply still shows the rate limits taken; no budget was held.
    assert admitted.ticket is not None and admitted.held == []
    await releases.unwind(Failed(got.value), settlement.ZERO, "req")
    assert watched.settled == []
    assert await level(parts.limits, counters(rate)["tokens"]) == 0  # the entry given back


async def test_with_the_limits_store_down_this_process_limits_alone() -> None:
    adm, parts, failed = admitter(LIMITS, Parts(limits=cast(LimitStore, Down())))
    rate = adm.rate_limits(Caller(key=key()), "m")
    releases = Releases()
    got = Admission()
    await adm.admit(got, rate, [], 0.0, 500, NOW, releases, "row_4")
    assert got.ticket is not None and got.ticket.local and failed == ["limits"]
    tokens = counters(rate)["tokens"]
    assert await level(parts.fallback_limits, tokens) == 500
    await releases.unwind(Aborted(), SPENT, "req")
    assert await level(parts.fallback_limits, tokens) == 120  # settled where it was taken


async def test_with_the_budget_store_down_spending_pauses_when_closed() -> None:
    adm, _, failed = admitter(BUDGETS, Parts(budgets=cast(BudgetStore, Down())))
    with pytest.raises(Unavailable) as got:
        await adm.admit(Admission(), [], adm.budgets(Caller(), None, NOW), 2.0, 300, NOW,
                        Releases(), "row_d")
    assert got.value.status == 503 and got.value.retry_after is not None
    assert "on_store_error: closed" in got.value.message and failed == ["budgets"]


async def test_with_the_budget_store_down_requests_go_unmetered_when_open() -> None:
    adm, _, failed = admitter({"budgets": {**BUDGETS["budgets"], "on_store_error": "open"}},
                              Parts(budgets=cast(BudgetStore, Down())))
    applied = adm.budgets(Caller(), None, NOW)
    got = Admission()
    await adm.admit(got, [], applied, 2.0, 300, NOW, Releases(), "row_e")
    assert got.held == applied and got.remaining_usd is None and failed == ["budgets"]


# The store lost its counters (policy/recovery.py rebuilds them); settles it refused.

class Lost(MemoryBudgets):
    """Budgets whose counters are being rebuilt: every reserve is `stale`."""

    def __init__(self) -> None:
        super().__init__()
        self.settled: list[tuple[str, list[tuple[str, float]]]] = []

    async def reserve(self, hold_id: str, claims: Sequence[Claim], expires_at: float,
                      now: float) -> Reservation:
        return Reservation([], stale=True)

    async def settle(self, hold_id: str, charges: Sequence[tuple[str, float]]) -> bool:
        self.settled.append((hold_id, list(charges)))
        return await super().settle(hold_id, charges)


async def test_while_the_counters_are_rebuilt_spending_pauses_when_closed() -> None:
    adm, _, failed = admitter(BUDGETS, Parts(budgets=(lost := Lost())))
    releases = Releases()
    with pytest.raises(Unavailable) as got:
        await adm.admit(Admission(), [], adm.budgets(Caller(), None, NOW), 2.0, 300, NOW,
                        releases, "row_f")
    assert got.value.status == 503 and got.value.retry_after == RETRY_AFTER
    assert "being rebuilt from the ledger" in got.value.message
    assert adm.held.lost.is_set() and failed == []  # the recovery is woken; not an outage
    await releases.unwind(Failed(got.value), settlement.ZERO, "req")
    assert lost.settled == [] and adm.held.holds == {}


async def test_while_the_counters_are_rebuilt_requests_go_unmetered_when_open() -> None:
    adm, _, _ = admitter({"budgets": {**BUDGETS["budgets"], "on_store_error": "open"}},
                         Parts(budgets=(lost := Lost())))
    applied = adm.budgets(Caller(), None, NOW)
    got, releases = Admission(), Releases()
    await adm.admit(got, [], applied, 2.0, 300, NOW, releases, "row_1")
    assert got.remaining_usd is None and adm.held.holds == {}
    await releases.unwind(Aborted(), SPENT, "req")
    # Its cost still reaches the counters (and the rebuild counts it once).
    assert lost.settled == [("row_1", budget.charges(applied, SPENT.usd, SPENT.tokens))]


async def test_a_hold_is_known_to_its_process_until_it_is_settled() -> None:
    adm, _, _ = admitter(BUDGETS)
    applied = adm.budgets(Caller(), None, NOW)
    releases = Releases()
    await adm.admit(Admission(), [], applied, 2.0, 300, NOW, releases, "row_7")
    assert adm.held.holds == {"row_7": (budget.claims(applied, 2.0, 300), NOW + 900)}
    await releases.unwind(Aborted(), SPENT, "req")
    assert adm.held.holds == {}


class RefusesSettles(MemoryBudgets):
    """Budgets that take holds but fail every settle until `back` is set."""

    back = False

    async def settle(self, hold_id: str, charges: Sequence[tuple[str, float]]) -> bool:
        if not self.back:
            raise ConnectionError("store down (settle)")
        return await super().settle(hold_id, charges)


async def test_a_settle_the_store_refused_is_kept_and_made_when_it_is_back() -> None:
    store = RefusesSettles()
    adm, parts, failed = admitter(BUDGETS, Parts(budgets=store))
    applied = adm.budgets(Caller(), None, NOW)
    releases = Releases()
    await adm.admit(Admission(), [], applied, 2.0, 300, NOW, releases, "row_9")
    await releases.unwind(Aborted(), SPENT, "req")
    assert failed == ["budgets"] and list(adm.held.unsettled) == ["row_9"]
    counters_ = [a.counter for a in applied]
    assert await store.levels(counters_, NOW) == [2.0, 300]  # still held at the worst case
    recovery = BudgetRecovery(adm.config, cast(Store, parts), adm.held, asyncio.sleep)
    with pytest.raises(ConnectionError):  # still down: kept for the next round
        await recovery.check()
    assert list(adm.held.unsettled) == ["row_9"]
    store.back = True
    await recovery.check()
    assert adm.held.unsettled == {} and await store.levels(counters_, NOW) == [0.5, 120]


# A batch's holds (tests/contract/test_batch_holds.py has them on the real stores).

class FailsAfter(MemoryBudgets):
    """Budgets that take `n` holds, then fail every reserve as an unreachable store."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    async def reserve(self, hold_id: str, claims: Sequence[Claim], expires_at: float,
                      now: float) -> Reservation:
        if self.n == 0:
            raise ConnectionError("store down (reserve)")
        self.n -= 1
        return await super().reserve(hold_id, claims, expires_at, now)


async def test_a_batch_the_store_fails_midway_is_refused_and_holds_nothing() -> None:
    store = FailsAfter(2)
    adm, _, failed = admitter(BUDGETS, Parts(budgets=store))
    applied = adm.budgets(Caller(), None, NOW)
    lines = [LineHold(f"row_b_b1_{i}", applied, 1.0, 100) for i in range(4)]
    with pytest.raises(Unavailable):
        await adm.hold_many(lines, NOW + 86_400, NOW)
    assert failed == ["budgets"] and adm.held.holds == {}
    assert await store.levels([a.counter for a in applied], NOW) == [0.0, 0.0]
