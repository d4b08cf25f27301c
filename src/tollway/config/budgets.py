"""The `budgets` section: spend limits by level, and the downgrade rules they trigger."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

import msgspec

from tollway.config.hints import did_you_mean
from tollway.errors import ConfigError


class Budget(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A limit on spend over a period: dollars (`usd`) or tokens (input + output).
    Periods are UTC windows; a new window starts from zero, with no reset job."""

    period: Literal["day", "month", "total"] = "day"
    usd: float | None = None
    tokens: int | None = None


Scope = Literal["global", "team", "key", "user", "feature", "conversation"]


class DowngradeRule(msgspec.Struct, forbid_unknown_fields=True):
    """Past `at` (a fraction) of any budget that applies (of `scope`'s budgets only,
    when given; dollars or tokens), the turn is degraded before a budget has to refuse
    it: a request for tier `source` (None: any tier) is sent to tier `to` instead,
    and/or the history is summarised above `summarise_above` tokens (lower than the
    alias's threshold: harder). A cost circuit breaker."""

    at: float
    to: str | None = None
    source: str | None = msgspec.field(default=None, name="from")
    scope: Scope | None = None
    summarise_above: int | None = None


class BudgetsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Budgets by level. In `users` and `features`, the name "*" applies to each end
    user / feature separately (every one gets its own allowance)."""

    global_: list[Budget] = msgspec.field(default_factory=list, name="global")
    teams: dict[str, list[Budget]] = {}
    users: dict[str, list[Budget]] = {}
    features: dict[str, list[Budget]] = {}
    conversations: list[Budget] = []  # per conversation id (x-tollway-conversation-id)
    # 429 is what SDKs and retry layers understand; 402 says "payment" more precisely.
    refuse_status: Literal[429, 402] = 429
    # A hold not settled by then (its process died) stops counting.
    hold_seconds: float = 900.0
    # When the budget store cannot be reached: refuse spending ("closed") or let the
    # request through unmetered ("open").
    on_store_error: Literal["closed", "open"] = "closed"
    downgrade: list[DowngradeRule] = []


def check_budgets(b: BudgetsConfig, tiers: Collection[str]) -> None:
    """`tiers`: the configured tier names, which downgrade rules must name."""
    levels: list[tuple[str, list[Budget]]] = [("budgets.global", b.global_),
                                             ("budgets.conversations", b.conversations)]
    for kind, named in (("teams", b.teams), ("users", b.users), ("features", b.features)):
        levels += [(f"budgets.{kind}.{name}", lst) for name, lst in named.items()]
    for where, lst in levels:
        for i, budget in enumerate(lst):
            check_budget(budget, f"{where}[{i}]")
    for i, rule in enumerate(b.downgrade):
        where = f"budgets.downgrade[{i}]"
        if not 0 < rule.at <= 1:
            raise ConfigError(f"{where}.at: a fraction of the budget, in (0, 1]")
        if rule.to is None and rule.summarise_above is None:
            raise ConfigError(f"{where}: give `to` (a cheaper tier), `summarise_above` "
                              "(a lower summarising threshold, in tokens) or both")
        if rule.summarise_above is not None and rule.summarise_above < 1:
            raise ConfigError(f"{where}.summarise_above: a number of tokens >= 1")
        for field, tier in (("to", rule.to), ("from", rule.source)):
            if tier is not None and tier not in tiers:
                raise ConfigError(f"{where}.{field}: {tier!r} is not a configured tier"
                                  + did_you_mean(tier, tiers))
    if b.hold_seconds <= 0:
        raise ConfigError("budgets.hold_seconds: must be > 0")


def check_budget(budget: Budget, where: str) -> None:
    if (budget.usd is None) == (budget.tokens is None):
        raise ConfigError(f"{where}: give exactly one of usd or tokens, e.g. "
                          "{usd: 10, period: day}")
    if (budget.usd if budget.usd is not None else budget.tokens or 0) <= 0:
        raise ConfigError(f"{where}: the limit must be > 0")
