"""Budget windows, which budgets apply, refusals and the budget-aware downgrade."""

from __future__ import annotations

import calendar

import pytest

from tollway.accounting.rows import Charged
from tollway.config import Budget, BudgetsConfig, DowngradeRule
from tollway.keys import KeyRecord
from tollway.policy import budget


def utc(*t: int) -> float:
    return float(calendar.timegm((*t, 0, 0, 0)[:6]))


@pytest.mark.parametrize(("period", "now", "wid", "ends"), [
    ("day", utc(2026, 11, 22, 23, 59, 59), "d20261122", utc(2026, 11, 23)),
    ("day", utc(2026, 11, 23), "d20261123", utc(2026, 11, 24)),
    ("month", utc(2026, 11, 30, 23, 59, 59), "m202611", utc(2026, 12, 1)),
    ("month", utc(2026, 12, 31, 12), "m202612", utc(2027, 1, 1)),
    ("hour", utc(2026, 11, 22, 7, 30), "h2026112207", utc(2026, 11, 22, 8)),
    ("total", utc(2026, 11, 22), "total", None),
])
def test_windows(period: str, now: float, wid: str, ends: float | None) -> None:
    assert budget.window(period, now) == (wid, ends)


def test_every_level_applies_and_star_means_each() -> None:
    cfg = BudgetsConfig(global_=[Budget(usd=100)], teams={"ml": [Budget(usd=50, period="month")]},
                        users={"*": [Budget(tokens=1000)]}, features={"search": [Budget(usd=5)]},
                        conversations=[Budget(usd=1, period="total")])
    who = budget.Who(key_lineage="key_1", key_budgets=(Budget(usd=10),), team="ml",
                     user="alice", feature="search", conversation="c9")
    got = budget.applicable(cfg, who, utc(2026, 11, 22, 12))
    assert [a.counter for a in got] == [
        "global//usd/d20261122", "team/ml/usd/m202611", "key/key_1/usd/d20261122",
        "user/alice/tokens/d20261122", "feature/search/usd/d20261122",
        "conversation/c9/usd/total"]
    bob = budget.applicable(cfg, budget.Who(user="bob"), utc(2026, 11, 22, 12))
    assert [a.counter for a in bob] == ["global//usd/d20261122", "user/bob/tokens/d20261122"]


def test_a_conversation_cap_is_counted_per_owner_and_says_how_to_go_on() -> None:
    cfg = BudgetsConfig(conversations=[Budget(tokens=500, period="total")])
    now = utc(2026, 11, 22, 12)
    mine, theirs = (budget.applicable(cfg, budget.Who(conversation="c9",
                                                      conversation_owner=o), now)[0]
                    for o in ("key_a", "key_b"))
    assert mine.counter == "conversation/key_a|c9/tokens/total"
    assert theirs.counter != mine.counter and mine.name == theirs.name == "c9"
    err = budget.refusal(mine, 480.0, 60.0, 429, now)
    assert err.code == "conversation_cap_exceeded" and err.retry_after is None
    assert "Conversation 'c9' has reached its cap" in err.message
    assert "500 tokens" in err.message and "20 tokens left" in err.message
    assert "Start a new conversation" in err.message


def test_two_budgets_on_one_counter_keep_the_lower() -> None:
    who = budget.Who(key_lineage="k", key_budgets=(Budget(usd=10), Budget(usd=3)))
    got = budget.applicable(BudgetsConfig(), who, 0)
    assert [(a.counter, a.limit) for a in got] == [("key/k/usd/d19700101", 3.0)]


def test_refusal_names_the_budget_what_is_left_and_the_reset() -> None:
    (a,) = budget.applicable(BudgetsConfig(), budget.Who(key_lineage="key_1",
                                                          key_budgets=(Budget(usd=5),)),
                             utc(2026, 11, 22, 12))
    err = budget.refusal(a, level=4.97, amount=0.12, status=402, now=utc(2026, 11, 22, 12))
    assert err.status == 402
    assert "the daily dollar budget of key 'key_1' ($5) has $0.03 left" in err.message
    assert "$0.03 left" in err.message and "$0.12" in err.message
    assert "resets at 2026-11-23T00:00:00Z" in err.message
    assert dict(err.headers())[b"retry-after"] == b"43200"
    assert dict(err.headers())[b"x-should-retry"] == b"false"


def test_downgrade_takes_the_highest_threshold_reached() -> None:
    rules = [DowngradeRule(at=0.9, source="complex", to="standard"),
             DowngradeRule(at=0.95, to="simple")]
    applied = budget.applicable(BudgetsConfig(global_=[Budget(usd=10)]), budget.Who(), 0)

    def target(tier: str, used: float) -> str | None:
        d = budget.degrade(rules, tier, applied, [used * 10])
        return d.tier if d is not None else None

    assert target("complex", 0.5) is None
    assert target("complex", 0.92) == "standard"
    assert target("standard", 0.92) is None
    assert target("complex", 0.97) == "simple"
    assert target("simple", 0.99) is None


def test_degrade_watches_its_scope_in_dollars_or_tokens_and_says_which() -> None:
    cfg = BudgetsConfig(global_=[Budget(usd=10)], conversations=[Budget(tokens=1000)])
    applied = budget.applicable(cfg, budget.Who(conversation="c", conversation_owner="o"), 0)
    rules = [DowngradeRule(at=0.6, scope="conversation", summarise_above=500),
             DowngradeRule(at=0.8, scope="conversation", to="simple"),
             DowngradeRule(at=0.7, scope="conversation", summarise_above=200)]
    assert budget.degrade(rules, "standard", applied, [9.9, 500.0]) is None  # not its scope
    d = budget.degrade(rules, "standard", applied, [0.0, 650.0])
    assert d is not None and (d.tier, d.summarise_above, d.what()) == (None, 500, "history")
    d = budget.degrade(rules, "standard", applied, [0.0, 850.0])
    assert d is not None and (d.tier, d.summarise_above, d.what()) == ("simple", 200,
                                                                      "tier,history")
    assert d.why() == "conversation tokens budget 85% used"
    # A summary's own call is not summarised; an untiered request keeps its model.
    assert budget.degrade(rules, "standard", applied, [0.0, 650.0], summarising=False) is None
    d = budget.degrade(rules, None, applied, [0.0, 850.0])
    assert d is not None and (d.tier, d.summarise_above) == (None, 200)


def test_remaining_looks_at_dollar_budgets() -> None:
    who = budget.Who(key_lineage="k", key_budgets=(Budget(usd=10), Budget(tokens=100)))
    applied = budget.applicable(BudgetsConfig(), who, 0)
    assert budget.remaining_usd(applied, [9.0, 100.0]) == 1.0


# What the ledger says the counters hold (the rebuild after the store lost them).

def test_period_starts_are_utc_midnights() -> None:
    assert budget.period_starts(utc(2026, 11, 22, 23, 59, 59)) == (utc(2026, 11, 22),
                                                                   utc(2026, 11, 1))
    assert budget.period_starts(utc(2027, 1, 1)) == (utc(2027, 1, 1), utc(2027, 1, 1))


def test_the_ledger_is_read_by_only_the_fields_budgets_are_counted_by() -> None:
    assert budget.ledger_fields(BudgetsConfig(global_=[Budget(usd=1)]), keyed=False) == []
    cfg = BudgetsConfig(teams={"ml": [Budget(usd=1)]}, conversations=[Budget(usd=1)])
    assert budget.ledger_fields(cfg, keyed=True) == [
        "key_id", "team", "conversation_owner", "conversation"]


def test_recounted_counts_each_row_in_the_windows_it_was_charged_to() -> None:
    cfg = BudgetsConfig(global_=[Budget(usd=100, period="day"), Budget(usd=100, period="month"),
                                 Budget(tokens=10**6, period="total")],
                        users={"*": [Budget(usd=5)]}, conversations=[Budget(usd=1, period="total")])
    key = KeyRecord(id="key_2", hint="h", created_at=0, lineage="key_1", hash="x",
                    budgets=[Budget(usd=3, period="month")])
    now = utc(2026, 11, 22, 12)
    got = budget.recounted(cfg, [
        Charged(period="day", key_id="key_2", user="ann", usd=1.0, tokens=10),
        Charged(period="month", key_id="key_2", usd=2.0, tokens=20),
        Charged(period="total", key_id="key_gone", usd=4.0, tokens=40),  # no record: no key
        Charged(period="day", conversation_owner="key_1/ann", conversation="c", usd=0.5),
        Charged(period="day", conversation="old", usd=0.25)],  # no owner recorded: skipped
        {"key_2": key}, now)
    assert got == {
        "global//usd/d20261122": 1.75, "global//usd/m202611": 3.75,
        "global//tokens/total": 70.0,
        "key/key_1/usd/m202611": 3.0,  # the key's lineage, from its record
        "user/ann/usd/d20261122": 1.0,
        "conversation/key_1/ann|c/usd/total": 0.5}


def test_a_counter_is_named_as_the_ledger_keeps_names() -> None:
    """PostgreSQL text has no NUL: the ledger keeps U+FFFD, and so does the counter, so
    the ledger can rebuild it."""
    got = budget.applicable(BudgetsConfig(users={"*": [Budget(usd=1)]}),
                            budget.Who(user="a\x00b"), utc(2026, 11, 22))
    assert [a.counter for a in got] == ["user/a\ufffdb/usd/d20261122"]
    assert got[0].name == "a\x00b"  # the refusal still names the user as sent
