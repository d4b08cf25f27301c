"""Planning: how much a request may ask for, and the most it can cost.

In the request's order: before the history is shaped, `degrade` (a budget nearing its
limit moves the turn to a cheaper tier and/or summarises its history harder); cap the
output (`cap`: no max_tokens gets the default; past the hard cap, or the tier's, it is
clamped); `downgrade` a very short input to a cheaper tier — so the cache is looked up
under the model that will answer — then, after the cache, which answers for free,
`complete`: count the input when anything needs it, check the input length and the
per-request cost ceiling (lowering max_tokens to fit, or refusing), and work out the
worst case that admission reserves (`cost.worst_output` is the one formula for its
output side).

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
    degraded: budget.Degrade | None = None  # what a budget nearing its limit changed
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

    async def degrade(self, route: R, choice: tiers.TierChoice, resolve: Callable[[str], R],
                      applied: list[budget.Applied], now: float, summarising: bool
                      ) -> tuple[R, tiers.TierChoice, budget.Degrade | None]:
        """Budgets nearing their limits (`budgets.downgrade`): a cheaper tier, a lower
        summarising threshold, or neither. Decided before the history is shaped (it
        may be shaped harder) and before the cache (which keys on the route)."""
        rules = self.config.budgets.downgrade
        if not rules or not applied:
            return route, choice, None
        levels = await self._levels([a.counter for a in applied], now)
        if levels is None:  # no levels, no degrading; the reserve decides
            return route, choice, None
        d = budget.degrade(rules, choice.tier, applied, levels, summarising)
        if d is not None and d.tier is not None:
            choice = tiers.named(d.tier, self.config)
            route = resolve(choice.model)
        return route, choice, d

    def cap(self, req: ChatRequest, route: Candidate, choice: tiers.TierChoice,
            degraded: budget.Degrade | None = None, asked: str | None = None) -> Plan:
        """`asked`: the tier asked for, when `degrade` moved the request off it."""
        plan = Plan(clamped=cap_output(req, route.model, self.config.server, choice.max_tokens),
                    tier=choice.tier, degraded=degraded)
        if degraded is not None and degraded.tier is not None:
            plan.downgraded_from, plan.downgrade_reason = asked, "budget"
        return plan

    async def downgrade(self, plan: Plan, req: ChatRequest, route: R,
                        choice: tiers.TierChoice, resolve: Callable[[str], R],
                        count: InputCount) -> R:
        """A very short input (`auto_downgrade`) goes to a cheaper tier: decided before
        the cache, so a hit is an answer of the model that would answer."""
        if not (choice.tier and self.config.auto_downgrade.enabled):
            return route
        n = plan.input_tokens = await count.of(route.deployments[0].model)
        lower = tiers.downgrade(choice, n, self.config)
        if lower is None:
            return route
        plan.downgraded_from, plan.downgrade_reason = choice.tier, "short_input"
        plan.tier, route = lower.tier, resolve(lower.model)
        plan.clamped = cap_output(req, route.model, self.config.server,
                                  lower.max_tokens) or plan.clamped
        plan.input_tokens = await count.of(route.deployments[0].model)
        return route

    async def complete(self, plan: Plan, req: ChatRequest, route: Candidate, *,
                       count: InputCount, applied: list[budget.Applied], must_count: bool,
                       attempts: int) -> None:
        """Count, pre-flight, worst case."""
        if plan.input_tokens is None and (applied or route.limits.need_count or must_count):
            plan.input_tokens = await count.of(route.deployments[0].model)
        if plan.input_tokens is not None:
            self._preflight(plan, req, route, plan.input_tokens, applied)
        plan.attempt_tokens = (plan.input_tokens or 0) + worst_output(req)
        plan.worst_tokens = plan.attempt_tokens * attempts
        plan.worst_usd *= attempts

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
