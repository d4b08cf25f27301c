"""Planning: how much a request may ask for, and the most it can cost.

In the request's order: cap the output (`cap`: no max_tokens gets the default; past the
hard cap, or the tier's, it is clamped), then — after the cache, which answers for free
— count the input when anything needs it, maybe move to a cheaper tier (a very short
input, or a dollar budget nearly spent), check the input length and the per-request
cost ceiling (lowering max_tokens to fit, or refusing), and work out the worst case
that admission reserves (`cost.worst_output` is the one formula for its output side).

A route is whatever satisfies `Candidate` (the gateway's routes do), so planning is
tested without one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import msgspec

from tollway.accounting import prices
from tollway.accounting.prices import Price
from tollway.accounting.tokens import InputCount, TokenCount
from tollway.config import Config, ModelConfig, ServerConfig
from tollway.policy import budget, cost, tiers
from tollway.policy.cost import worst_output
from tollway.types import ChatRequest, Deployment


class Candidate(Protocol):
    """What planning needs to know of a route."""

    @property
    def alias(self) -> str: ...
    @property
    def model(self) -> ModelConfig: ...
    @property
    def deployments(self) -> Sequence[Deployment]: ...
    @property
    def limits(self) -> cost.Limits: ...
    def price(self, dep: Deployment) -> Price | None: ...


R = TypeVar("R", bound=Candidate)
Levels = Callable[[list[str], float], Awaitable[list[float] | None]]


class Plan(msgspec.Struct):
    """What planning decided (reply headers, the ledger, admission, the stream meter)."""

    clamped: str | None = None  # why max_tokens was lowered: cap | tier | cost_ceiling
    tier: str | None = None
    downgraded_from: str | None = None  # the tier asked for, when moved to a cheaper one
    downgrade_reason: str | None = None  # short_input | budget | latest_turn
    route_reason: str | None = None  # routing on the latest turn: what decided (complexity)
    input_tokens: int | None = None  # counted, when something needed them
    ceiling: cost.CeilingDecision | None = None  # the per-request cost ceiling's verdict
    worst_usd: float = 0.0  # every attempt at the dearest deployment: what budgets hold
    worst_tokens: int = 0  # likewise in tokens: rate limits and token budgets
    attempt_tokens: int = 0  # one attempt's input + most output: outbound pacing


def cap_output(req: ChatRequest, model: ModelConfig, server: ServerConfig,
               tier_cap: int | None = None) -> str | None:
    """No limit -> the default; above the hard cap (or the tier's cap) -> clamped.
    Returns why it was clamped (for the reply header), or None."""
    default = model.default_max_tokens or server.default_max_tokens
    cap = model.max_tokens_cap or server.max_tokens_cap
    reason = "cap"
    if tier_cap is not None and tier_cap < cap:
        cap, reason = tier_cap, "tier"
    asked = req.output_limit()
    if asked is None:
        limit, clamped = min(default, cap), None
    elif asked > cap:
        limit, clamped = cap, reason
    else:
        return None
    if req.max_completion_tokens is not None:
        req.max_completion_tokens = limit
    else:
        req.max_tokens = limit
    return clamped


class Planner:
    def __init__(self, config: Config, levels: Levels) -> None:
        self.config = config
        self._levels = levels  # budget counters' levels; None when the store failed

    def cap(self, req: ChatRequest, route: Candidate, choice: tiers.TierChoice) -> Plan:
        return Plan(clamped=cap_output(req, route.model, self.config.server, choice.max_tokens))

    async def complete(self, plan: Plan, req: ChatRequest, route: R, choice: tiers.TierChoice,
                       resolve: Callable[[str], R], *, count: InputCount,
                       applied: list[budget.Applied], must_count: bool, attempts: int,
                       now: float) -> R:
        """Count, maybe downgrade, pre-flight, worst case; the route to send to."""
        short_input_rule = bool(choice.tier) and self.config.auto_downgrade.enabled
        if applied or route.limits.need_count or short_input_rule or must_count:
            n = plan.input_tokens = await count.of(route.deployments[0].model)
            lower = await self._downgrade(plan, choice, n, applied, now)
            if lower is not None:
                choice, route = lower, resolve(lower.model)
                plan.clamped = cap_output(req, route.model, self.config.server,
                                          choice.max_tokens) or plan.clamped
                plan.input_tokens = await count.of(route.deployments[0].model)
        plan.tier = choice.tier
        if plan.input_tokens is not None:
            self._preflight(plan, req, route, plan.input_tokens, applied)
        plan.attempt_tokens = (plan.input_tokens or 0) + worst_output(req)
        plan.worst_tokens = plan.attempt_tokens * attempts
        plan.worst_usd *= attempts
        return route

    async def embedding(self, plan: Plan, route: Candidate, choice: tiers.TierChoice,
                        count: TokenCount, applied: list[budget.Applied],
                        must_count: bool) -> None:
        """An embeddings request's plan: it has no output, so its worst case is its input
        at the dearest deployment. Counted, checked against the input limit, the
        unpriced policy and the per-request ceiling (refused: nothing to lower) only
        when a limit, budget or pacing needs the count."""
        plan.tier = choice.tier
        limits = route.limits
        if not (applied or limits.need_count or must_count):
            return
        n = plan.input_tokens = await count.of(route.deployments[0].model)
        cost.check_input_length(n, limits, param="input")
        dollar_limit = limits.max_cost_usd is not None or any(a.metric == "usd" for a in applied)
        for dep in route.deployments:
            price = route.price(dep)
            if price is None:
                cost.refuse_unpriced(dep.model, self.config.server.unpriced, dollar_limit)
            else:
                plan.worst_usd = max(plan.worst_usd, prices.worst_case(n, 0, price))
        if limits.max_cost_usd is not None:
            plan.ceiling = cost.input_ceiling(n, plan.worst_usd, limits.max_cost_usd,
                                              route.deployments[0].model)
        plan.attempt_tokens = plan.worst_tokens = n

    async def _downgrade(self, plan: Plan, choice: tiers.TierChoice, input_tokens: int,
                         applied: list[budget.Applied], now: float) -> tiers.TierChoice | None:
        """A cheaper tier: for a very short input, or when a budget is nearly spent."""
        lower, why = tiers.downgrade(choice, input_tokens, self.config), "short_input"
        rules = self.config.budgets.downgrade
        if lower is None and applied and choice.tier and rules:
            levels = await self._levels([a.counter for a in applied], now)
            if levels is None:  # no levels, no downgrade; the reserve decides
                return None
            target = budget.downgrade_target(rules, choice.tier,
                                             budget.used_fraction(applied, levels))
            lower, why = (tiers.named(target, self.config) if target else None), "budget"
        if lower is not None:
            plan.downgraded_from, plan.downgrade_reason = choice.tier, why
        return lower

    def _preflight(self, plan: Plan, req: ChatRequest, route: Candidate, input_tokens: int,
                   applied: list[budget.Applied]) -> None:
        """Checks before sending; the ceiling's verdict and the worst case in USD at the
        dearest deployment (what budgets reserve: it must hold whichever answers)."""
        limits = route.limits
        cost.check_input_length(input_tokens, limits)
        dollar_limit = limits.max_cost_usd is not None or any(a.metric == "usd" for a in applied)
        dearest: tuple[float, Price, Deployment] | None = None
        for dep in route.deployments:
            price = route.price(dep)
            if price is None:
                cost.refuse_unpriced(dep.model, self.config.server.unpriced, dollar_limit)
                continue
            w = prices.worst_case(input_tokens, worst_output(req), price)
            if dearest is None or w > dearest[0]:
                dearest = (w, price, dep)
        if dearest is None:
            return
        plan.worst_usd = dearest[0]
        plan.ceiling = cost.fit_ceiling(req, input_tokens, dearest[1], limits, dearest[2].model)
        if plan.ceiling is not None and plan.ceiling.clamped:
            plan.clamped = "cost_ceiling"
            plan.worst_usd = max(prices.worst_case(input_tokens, worst_output(req), p)
                                 for d in route.deployments if (p := route.price(d)) is not None)
