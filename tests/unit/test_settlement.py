"""Pricing a request once (`priced`, `estimated`, `cache_hit`, `merged`) and giving back
what it took (`Releases.unwind`)."""

from __future__ import annotations

import logging

import pytest

from tests.unit.fakes import answer, usage
from tollway.accounting import settlement
from tollway.accounting.prices import price_from_config
from tollway.accounting.settlement import Aborted, Answered, Outcome, Releases, Settlement
from tollway.config import PriceConfig
from tollway.types import Usage

# $1 per 1M input tokens, $2 per 1M output tokens.
PRICE = price_from_config(PriceConfig(input=1.0, output=2.0))


def test_priced_at_the_models_price() -> None:
    s = settlement.priced(usage(1000, 500), PRICE)
    assert s.cost_usd == pytest.approx(0.002)  # 1000 * $1/1M + 500 * $2/1M
    assert s.tokens == 1500 and not s.estimated and not s.cut


def test_an_unpriced_model_costs_none_not_zero() -> None:
    s = settlement.priced(usage(1000, 500), None, estimated=True, cut=True)
    assert s.cost_usd is None and s.usd == 0.0
    assert s.usage == usage(1000, 500) and s.estimated and s.cut


def test_no_usage_at_a_price_costs_zero() -> None:
    s = settlement.priced(None, PRICE)
    assert s.cost_usd == 0.0 and s.tokens == 0


def test_estimated_is_our_count_priced_and_marked() -> None:
    s = settlement.estimated(300, 40, PRICE, cut=True)
    assert s.usage == Usage(prompt_tokens=300, completion_tokens=40, total_tokens=340)
    assert s.cost_usd == pytest.approx(300e-6 + 80e-6)
    assert s.estimated and s.cut
    assert settlement.estimated(300, 40, None).cost_usd is None


def test_a_cache_hit_costs_nothing_and_says_what_it_saved() -> None:
    s = settlement.cache_hit(0.25)
    assert (s.usage, s.cost_usd, s.saved_usd, s.tokens) == (None, 0.0, 0.25, 0)


def test_merged_without_discarded_attempts_is_the_last() -> None:
    last = settlement.priced(usage(10, 5), PRICE)
    assert settlement.merged([], last) is last


def test_merged_adds_tokens_and_dollars_of_every_attempt() -> None:
    cached = Usage(prompt_tokens=100, completion_tokens=10, total_tokens=110, cached_tokens=60)
    parts = [settlement.priced(cached, PRICE), settlement.estimated(200, 20, PRICE)]
    last = settlement.priced(usage(300, 30), PRICE)
    s = settlement.merged(parts, last)
    assert s.usage == Usage(prompt_tokens=600, completion_tokens=60, total_tokens=660,
                            cached_tokens=60)
    assert s.cost_usd == pytest.approx(sum(p.usd for p in [*parts, last]))
    assert s.estimated  # one part was our own count


def test_merged_is_unpriced_if_any_part_is() -> None:
    s = settlement.merged([settlement.priced(usage(10, 5), None)],
                          settlement.priced(usage(10, 5), PRICE))
    assert s.cost_usd is None and s.tokens == 30


def test_merged_takes_cut_and_saved_from_the_last_only() -> None:
    discarded = Settlement(usage(10, 5), 0.1, cut=True, saved_usd=9.0)
    last = Settlement(None, 0.0, cut=False, saved_usd=0.5)
    s = settlement.merged([discarded], last)
    assert not s.cut and s.saved_usd == 0.5
    assert s.usage == usage(10, 5)  # a part without usage adds nothing
    assert settlement.merged([Settlement(None, 0.0)], Settlement(None, 0.0, cut=True)).cut


def test_merged_of_parts_without_usage_has_none() -> None:
    s = settlement.merged([Settlement(None, 0.1)], Settlement(None, 0.2))
    assert s.usage is None and s.cost_usd == pytest.approx(0.3)


async def test_unwind_runs_newest_first_each_with_the_outcome_and_settlement(
        caplog: pytest.LogCaptureFixture) -> None:
    releases = Releases()
    ran: list[tuple[str, Outcome, Settlement]] = []

    def release(what: str, fails: bool = False) -> settlement.Release:
        async def run(outcome: Outcome, s: Settlement) -> None:
            ran.append((what, outcome, s))
            if fails:
                raise RuntimeError(f"{what} broke")
        return run

    releases.push("rate-limit entry", release("rate-limit entry"))
    releases.push("budget hold", release("budget hold", fails=True))
    releases.push("cache fill", release("cache fill"))
    outcome, s = Answered(answer("hi")), settlement.priced(usage(3, 4), PRICE)
    with caplog.at_level(logging.ERROR, logger="tollway"):
        await releases.unwind(outcome, s, "req-1")

    assert [what for what, _, _ in ran] == ["cache fill", "budget hold", "rate-limit entry"]
    assert all(o is outcome and got is s for _, o, got in ran)
    assert [r.getMessage() for r in caplog.records] == [
        "req-1: releasing the budget hold failed"]

    await releases.unwind(Aborted(), settlement.ZERO, "req-1")  # a second unwind: nothing
    assert len(ran) == 3 and releases.pending == []
