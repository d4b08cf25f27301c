"""Planning: the output cap, then counting, downgrades, pre-flight checks and the worst
case admission reserves — on a small route of the test's own (`Lane`), so no gateway is
built."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.unit.fakes import request
from tollway.accounting.prices import Price, max_output_within, price_from_config, worst_case
from tollway.accounting.tokens import InputCount, count_request
from tollway.config import Config, ModelConfig, PriceConfig, ServerConfig, parse
from tollway.errors import InvalidRequest
from tollway.policy import budget, cost, tiers
from tollway.policy.plan import Plan, Planner, cap_output
from tollway.types import ChatRequest, Deployment

NOW = 1_800_000_000.0
# USD per 1M tokens (input, output) of the test's models; "free-model" has no price.
PRICES = {name: price_from_config(PriceConfig(input=i, output=o)) for name, (i, o) in {
    "big-model": (10.0, 30.0), "small-model": (1.0, 2.0), "dear-model": (20.0, 60.0)}.items()}


@dataclass
class Lane:
    """A route as planning sees it (`plan.Candidate`)."""

    alias: str
    model: ModelConfig
    deployments: list[Deployment]
    limits: cost.Limits

    def price(self, dep: Deployment) -> Price | None:
        return PRICES.get(dep.model)


@dataclass
class Lanes:
    """Every alias's lane, and the names `resolve` was asked for."""

    config: Config
    asked: list[str] = field(default_factory=list)

    def __getitem__(self, alias: str) -> Lane:
        mc = self.config.models[alias]
        return Lane(alias, mc, [d.to_deployment() for d in mc.deployments],
                    cost.Limits.of(mc, self.config.server))

    def resolve(self, name: str) -> Lane:
        self.asked.append(name)
        return self[name]


def config(**sections: Any) -> Config:
    def models(*names: str) -> dict[str, Any]:
        return {"deployments": [{"provider": "openai", "model": n, "api_key": "k"}
                                for n in names]}
    return parse({"models": {"big": models("big-model"), "small": models("small-model"),
                             "free": models("free-model"),
                             "pair": models("big-model", "dear-model"),
                             **sections.pop("models", {})}, **sections}, env={})


TIERS = {"standard": {"model": "big"}, "simple": {"model": "small", "max_tokens": 50}}


class Levels:
    """The budget counters' levels a planner is told (None: the store failed)."""

    def __init__(self, levels: list[float] | None) -> None:
        self.levels = levels
        self.asked: list[tuple[list[str], float]] = []

    async def __call__(self, counters: list[str], now: float) -> list[float] | None:
        self.asked.append((counters, now))
        return self.levels


async def complete(cfg: Config, req: ChatRequest, alias: str = "big", *,
                   tier: str | None = None, applied: Sequence[budget.Applied] = (),
                   must_count: bool = False, attempts: int = 1,
                   levels: Levels | None = None) -> tuple[Plan, Lane, Lanes]:
    """Plan `req` for `alias` (or a tier) as the pipeline does: degrade, cap, downgrade,
    then (after the cache) complete."""
    lanes = Lanes(cfg)
    choice = tiers.named(tier, cfg) if tier else tiers.TierChoice(alias)
    planner = Planner(cfg, levels or Levels([]))
    asked, count = choice.tier, InputCount(req)
    route, choice, degraded = await planner.degrade(lanes[choice.model], choice, lanes.resolve,
                                                    list(applied), NOW, summarising=True)
    plan = planner.cap(req, route, choice, degraded, asked)
    route = await planner.downgrade(plan, req, route, choice, lanes.resolve, count)
    await planner.complete(plan, req, route, count=count, applied=list(applied),
                           must_count=must_count, attempts=attempts)
    return plan, route, lanes


# cap_output: what a request may ask for.

SERVER = ServerConfig(default_max_tokens=100, max_tokens_cap=500)


@pytest.mark.parametrize(("asked", "model", "tier_cap", "limit", "why"), [
    (None, ModelConfig([]), None, 100, None),  # the server's default
    (None, ModelConfig([], default_max_tokens=70), None, 70, None),  # the alias's default
    (None, ModelConfig([]), 30, 30, None),  # a tier's cap under the default: nothing asked
    (400, ModelConfig([]), None, 400, None),  # within the cap: untouched
    (900, ModelConfig([]), None, 500, "cap"),
    (900, ModelConfig([], max_tokens_cap=600), None, 600, "cap"),  # the alias's cap
    (900, ModelConfig([]), 200, 200, "tier"),
    (900, ModelConfig([]), 800, 500, "cap"),  # a tier cap above the hard cap: the cap
])
def test_cap_output(asked: int | None, model: ModelConfig, tier_cap: int | None,
                    limit: int, why: str | None) -> None:
    req = request("hi", max_tokens=asked)
    assert cap_output(req, model, SERVER, tier_cap) == why
    assert req.max_tokens == limit and req.max_completion_tokens is None


def test_cap_output_keeps_max_completion_tokens_as_the_field_used() -> None:
    req = request("hi", max_completion_tokens=900)
    assert cap_output(req, ModelConfig([]), SERVER) == "cap"
    assert (req.max_completion_tokens, req.max_tokens) == (500, None)


@pytest.mark.parametrize(("kw", "worst"), [
    ({}, 0), ({"max_tokens": 100}, 100), ({"max_tokens": 100, "n": 3}, 300),
    ({"max_tokens": 100, "max_completion_tokens": 40, "n": 2}, 80),
])
def test_worst_output_is_max_tokens_for_every_choice(kw: dict[str, int], worst: int) -> None:
    assert cost.worst_output(request("hi", **kw)) == worst


def test_planner_cap_says_why_it_clamped() -> None:
    cfg = config(tiers=TIERS)
    req = request("hi", max_tokens=200)
    plan = Planner(cfg, Levels([])).cap(req, Lanes(cfg)["small"], tiers.named("simple", cfg))
    assert plan.clamped == "tier" and req.max_tokens == 50


# complete: counting only when something needs it.

async def test_nothing_configured_counts_nothing() -> None:
    req = request("hi", max_tokens=100)
    plan, route, lanes = await complete(config(), req, attempts=2)
    assert plan.input_tokens is None and plan.ceiling is None and plan.worst_usd == 0.0
    assert (plan.attempt_tokens, plan.worst_tokens) == (100, 200)
    assert route.alias == "big" and lanes.asked == [] and plan.tier is None


@pytest.mark.parametrize("why", ["must_count", "input_limit", "budget"])
async def test_counts_when_something_needs_it(why: str) -> None:
    cfg = config(server={"max_input_tokens": 10_000} if why == "input_limit" else {},
                 budgets={"global": [{"tokens": 1_000_000}]})
    applied = budget.applicable(cfg.budgets, budget.Who(), NOW) if why == "budget" else []
    req = request("hi", max_tokens=100)
    plan, _, _ = await complete(cfg, req, applied=applied, must_count=why == "must_count")
    assert plan.input_tokens == count_request(req, "big-model")


# complete: downgrades.

async def test_a_short_input_goes_to_the_cheaper_tier_resolved_and_capped_again() -> None:
    cfg = config(tiers=TIERS, auto_downgrade={"enabled": True, "to": "simple"})
    req = request("hi", max_tokens=200)
    plan, route, lanes = await complete(cfg, req, tier="standard")
    assert route.alias == "small" and lanes.asked == ["small"]
    assert (plan.tier, plan.downgraded_from, plan.downgrade_reason) == (
        "simple", "standard", "short_input")
    assert plan.clamped == "tier" and req.max_tokens == 50  # the simple tier's cap
    assert plan.input_tokens == count_request(req, "small-model")
    assert plan.worst_usd == worst_case(plan.input_tokens, 50, PRICES["small-model"])


async def test_a_long_input_stays_on_its_tier() -> None:
    cfg = config(tiers=TIERS, auto_downgrade={"enabled": True, "to": "simple",
                                              "max_input_tokens": 50})
    req = request("word " * 100, max_tokens=200)
    plan, route, lanes = await complete(cfg, req, tier="standard")
    assert route.alias == "big" and lanes.asked == [] and plan.downgraded_from is None
    assert plan.tier == "standard" and req.max_tokens == 200


BUDGET_DOWNGRADE = {"global": [{"usd": 10}], "downgrade": [{"at": 0.8, "to": "simple"}]}


async def test_a_nearly_spent_budget_moves_the_request_to_the_cheaper_tier() -> None:
    cfg = config(tiers=TIERS, budgets=BUDGET_DOWNGRADE)
    applied = budget.applicable(cfg.budgets, budget.Who(), NOW)
    levels = Levels([9.0])  # 90% spent
    plan, route, lanes = await complete(cfg, request("hi", max_tokens=200), tier="standard",
                                        applied=applied, levels=levels)
    assert levels.asked == [([applied[0].counter], NOW)]
    assert route.alias == "small" and lanes.asked == ["small"]
    assert (plan.downgraded_from, plan.downgrade_reason, plan.tier) == (
        "standard", "budget", "simple")


@pytest.mark.parametrize("levels", [[2.0], None], ids=["under_the_threshold", "store_down"])
async def test_no_budget_downgrade_below_the_threshold_or_without_levels(
        levels: list[float] | None) -> None:
    cfg = config(tiers=TIERS, budgets=BUDGET_DOWNGRADE)
    applied = budget.applicable(cfg.budgets, budget.Who(), NOW)
    plan, route, lanes = await complete(cfg, request("hi", max_tokens=200), tier="standard",
                                        applied=applied, levels=Levels(levels))
    assert route.alias == "big" and lanes.asked == []
    assert plan.downgraded_from is None and plan.tier == "standard"


# complete: pre-flight.

async def test_an_input_over_the_limit_is_refused() -> None:
    cfg = config(models={"big": {"deployments": [
        {"provider": "openai", "model": "big-model", "api_key": "k"}], "max_input_tokens": 5}})
    with pytest.raises(InvalidRequest) as got:
        await complete(cfg, request("a longer question than five tokens"))
    assert got.value.code == "input_too_long" and got.value.status == 400


@pytest.mark.parametrize("limit", ["ceiling", "budget"])
async def test_an_unpriced_model_is_refused_under_a_dollar_limit(limit: str) -> None:
    cfg = config(server={"max_cost_usd": 1.0} if limit == "ceiling" else {},
                 budgets={"global": [{"usd": 10}]})
    applied = budget.applicable(cfg.budgets, budget.Who(), NOW) if limit == "budget" else []
    with pytest.raises(InvalidRequest) as got:
        await complete(cfg, request("hi"), "free", applied=applied)
    assert got.value.code == "unpriced_model" and "free-model" in got.value.message


async def test_an_unpriced_model_without_a_dollar_limit_goes_at_no_worst_cost() -> None:
    plan, route, _ = await complete(config(), request("hi", max_tokens=10), "free",
                                    must_count=True)
    assert route.alias == "free" and plan.worst_usd == 0.0 and plan.ceiling is None


async def test_the_cost_ceiling_lowers_max_tokens_to_fit() -> None:
    cfg = config(server={"max_cost_usd": 0.003})
    req = request("hi", max_tokens=1000)
    plan, _, _ = await complete(cfg, req, attempts=2)
    n, price = count_request(req, "big-model"), PRICES["big-model"]
    fits = max_output_within(0.003, n, price)
    assert 16 <= fits < 1000  # enough is left for an answer
    assert plan.clamped == "cost_ceiling" and req.max_tokens == fits
    assert plan.ceiling is not None and plan.ceiling.clamped
    assert plan.ceiling.max_output == fits
    assert plan.worst_usd == pytest.approx(2 * worst_case(n, fits, price))
    assert plan.worst_usd / 2 <= 0.003


async def test_the_cost_ceiling_refuses_when_too_little_output_would_fit() -> None:
    cfg = config(server={"max_cost_usd": 0.0003})  # ~7 output tokens at big-model's price
    with pytest.raises(InvalidRequest) as got:
        await complete(cfg, request("hi", max_tokens=1000))
    assert got.value.code == "cost_ceiling_exceeded"


async def test_within_the_ceiling_nothing_is_clamped() -> None:
    req = request("hi", max_tokens=10)
    plan, _, _ = await complete(config(server={"max_cost_usd": 1.0}), req)
    assert plan.ceiling is not None and not plan.ceiling.clamped
    assert plan.clamped is None and req.max_tokens == 10


async def test_the_worst_case_is_every_attempt_at_the_dearest_deployment() -> None:
    req = request("hi", max_tokens=100)
    plan, _, _ = await complete(config(), req, "pair", must_count=True, attempts=3)
    n = count_request(req, "big-model")
    assert plan.worst_usd == pytest.approx(3 * worst_case(n, 100, PRICES["dear-model"]))
    assert plan.attempt_tokens == n + 100 and plan.worst_tokens == 3 * (n + 100)
