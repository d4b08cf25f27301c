"""Which budgets apply to a request, what to reserve on them, and what a refusal says.

Levels: global, team, key, end user, feature, conversation. Each budget is dollars
or tokens over a UTC period; its counter is named for the scope and the period's
window (`key/key_ab12/usd/d20261122`), so a new day is a new counter: budgets roll
over by window, with no reset job.

Before a call the gateway reserves the worst case on every applicable counter at
once (all or nothing, in the store); after it, it settles the real amounts. Nothing
is checked-then-incremented, so concurrent requests cannot overshoot.

A ledger row names everything that decides its counters (the key — its record has the
key's budgets and lineage —, team, user, feature, conversation and its owner, the
time), so `recounted` can say what each current counter holds by the ledger after the
store lost them (policy/recovery.py).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from tollway.accounting.prices import format_usd
from tollway.accounting.rows import Charged, storable
from tollway.config import Budget, BudgetsConfig, DowngradeRule
from tollway.errors import BudgetExceeded
from tollway.keys import KeyRecord
from tollway.store.base import Claim

Metric = Literal["usd", "tokens"]
PERIOD_WORD = {"day": "daily", "month": "monthly", "total": "total"}


@dataclass(frozen=True, slots=True)
class Applied:
    """One budget that applies to this request, in its current window."""

    scope: str  # global | team | key | user | feature | conversation
    name: str  # the team, key id, user... ("" for global)
    period: str
    metric: Metric
    limit: float
    counter: str
    resets_at: float | None  # None: a total budget never resets

    def describe(self) -> str:
        what = f"{PERIOD_WORD[self.period]} {'dollar' if self.metric == 'usd' else 'token'}"
        if self.scope == "global":
            return f"the global {what} budget"
        return f"the {what} budget of {self.scope} '{self.name}'"


@dataclass(frozen=True, slots=True)
class Who:
    """The parties a request is charged to."""

    key_lineage: str | None = None
    key_budgets: tuple[Budget, ...] = ()
    team: str | None = None
    user: str | None = None
    feature: str | None = None
    conversation: str | None = None
    # Whose conversation: one owner's id never shares a counter with another's.
    conversation_owner: str | None = None


def window(period: str, now: float) -> tuple[str, float | None]:
    """(window id, when it ends) for a period at `now` (UTC)."""
    if period == "total":
        return "total", None
    t = time.gmtime(now)
    if period == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        return f"d{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}", float(start + 86400)
    if period == "hour":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, 0, 0))
        return f"h{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}{t.tm_hour:02d}", float(start + 3600)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return f"m{t.tm_year:04d}{t.tm_mon:02d}", float(calendar.timegm((year, month, 1, 0, 0, 0)))


def period_starts(now: float) -> tuple[float, float]:
    """When the current UTC day and month began."""
    t = time.gmtime(now)
    return (float(calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))),
            float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))))


def _apply(out: list[Applied], scope: str, name: str, budgets: Sequence[Budget],
           now: float, owner: str | None = None) -> None:
    # Named as the ledger keeps the names (no NUL), so it can rebuild the counter.
    counted = storable(f"{owner}|{name}" if owner is not None else name)
    for b in budgets:
        metric: Metric = "usd" if b.usd is not None else "tokens"
        limit = float(b.usd if b.usd is not None else b.tokens or 0)
        wid, resets = window(b.period, now)
        out.append(Applied(scope, name, b.period, metric, limit,
                           f"{scope}/{counted}/{metric}/{wid}", resets))


def applicable(cfg: BudgetsConfig, who: Who, now: float) -> list[Applied]:
    out: list[Applied] = []
    _apply(out, "global", "", cfg.global_, now)
    if who.team is not None and who.team in cfg.teams:
        _apply(out, "team", who.team, cfg.teams[who.team], now)
    if who.key_lineage is not None:
        _apply(out, "key", who.key_lineage, who.key_budgets, now)
    if who.user is not None:
        _apply(out, "user", who.user, cfg.users.get(who.user) or cfg.users.get("*") or (), now)
    if who.feature is not None:
        _apply(out, "feature", who.feature,
               cfg.features.get(who.feature) or cfg.features.get("*") or (), now)
    if who.conversation is not None:
        _apply(out, "conversation", who.conversation, cfg.conversations, now,
               who.conversation_owner)
    if len({a.counter for a in out}) < len(out):  # two budgets on one counter: the lower
        lowest: dict[str, Applied] = {}
        for a in out:
            if a.counter not in lowest or a.limit < lowest[a.counter].limit:
                lowest[a.counter] = a
        out = list(lowest.values())
    return out


def configured(cfg: BudgetsConfig, keys: Iterable[KeyRecord], now: float,
               key: str | None = None) -> list[Applied]:
    """Every budget that is one counter, in its current window (for the dashboard): the
    global ones, each named team's, user's and feature's (a "*" budget, each one's own,
    and conversation caps are one counter per user or conversation: not listed), and
    each usable key's, by lineage (its newest usable record's); with `key`, that key
    lineage's alone."""
    out: list[Applied] = []
    if key is None:
        _apply(out, "global", "", cfg.global_, now)
        for scope, named in (("team", cfg.teams), ("user", cfg.users),
                             ("feature", cfg.features)):
            for name, budgets in named.items():
                if name != "*":
                    _apply(out, scope, name, budgets, now)
    newest: dict[str, KeyRecord] = {}
    for rec in keys:
        if rec.refusal(now) is not None or key not in (None, rec.lineage):
            continue
        seen = newest.get(rec.lineage)
        if seen is None or rec.created_at >= seen.created_at:
            newest[rec.lineage] = rec
    for lineage in sorted(newest):
        _apply(out, "key", lineage, newest[lineage].budgets, now)
    return out


def ledger_fields(cfg: BudgetsConfig, keyed: bool) -> list[str]:
    """The ledger fields the configured budgets are counted by (`keyed`: some key has
    budgets of its own)."""
    wanted = {"key_id": keyed, "team": bool(cfg.teams), "user": bool(cfg.users),
              "feature": bool(cfg.features), "conversation_owner": bool(cfg.conversations),
              "conversation": bool(cfg.conversations)}
    return [f for f, on in wanted.items() if on]


# Which periods' rows a budget of each period counts (Charged.period: rows of today,
# of the month before today, of before the month).
_COUNTS = {"day": ("day",), "month": ("day", "month"), "total": ("day", "month", "total")}


def recounted(cfg: BudgetsConfig, groups: Iterable[Charged], keys: Mapping[str, KeyRecord],
              now: float) -> dict[str, float]:
    """What each current budget counter holds by the ledger: the amounts of the rows
    charged to it in its window (`keys`: the key records with budgets, by id)."""
    out: dict[str, float] = {}
    for g in groups:
        key = keys.get(g.key_id) if g.key_id is not None else None
        owner = g.conversation_owner  # rows from before it was recorded: not counted
        who = Who(key_lineage=key.lineage if key is not None else None,
                  key_budgets=tuple(key.budgets) if key is not None else (),
                  team=g.team, user=g.user, feature=g.feature,
                  conversation=g.conversation if owner is not None else None,
                  conversation_owner=owner)
        for a in applicable(cfg, who, now):
            if g.period in _COUNTS[a.period]:
                out[a.counter] = out.get(a.counter, 0.0) + (g.usd if a.metric == "usd"
                                                            else g.tokens)
    return out


def claims(applied: list[Applied], usd: float, tokens: int) -> list[Claim]:
    return [Claim(a.counter, a.limit, usd if a.metric == "usd" else float(tokens))
            for a in applied]


def charges(applied: list[Applied], usd: float, tokens: int) -> list[tuple[str, float]]:
    return [(a.counter, usd if a.metric == "usd" else float(tokens)) for a in applied]


def refusal(a: Applied, level: float, amount: float, status: int, now: float) -> BudgetExceeded:
    left = max(a.limit - level, 0.0)
    if a.metric == "usd":
        limit_s, left_s, need_s = (f"${format_usd(a.limit)}", f"${format_usd(left)}",
                                   f"${format_usd(amount)}")
    else:
        limit_s, left_s, need_s = (f"{int(a.limit)} tokens", f"{int(left)} tokens",
                                   f"{int(amount)} tokens")
    resets = ("it does not reset" if a.resets_at is None else
              "it resets at " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a.resets_at)))
    if a.scope == "conversation":
        msg = (f"Conversation '{a.name}' has reached its cap: {a.describe()} ({limit_s}) has "
               f"{left_s} left, and this turn could use up to {need_s}; {resets}. Start a "
               "new conversation (a new id in x-tollway-conversation or "
               "x-tollway-conversation-id) to go on. Nothing was sent to the model.")
    else:
        msg = (f"Budget exceeded: {a.describe()} ({limit_s}) has {left_s} left, and this "
               f"request could use up to {need_s} (its worst case); {resets}. Lower "
               "max_tokens, shorten the input, or raise the budget.")
    err = BudgetExceeded(msg, status=status,
                         retry_after=None if a.resets_at is None else a.resets_at - now)
    if a.scope == "conversation":
        err.code = "conversation_cap_exceeded"
    err.budget = a
    err.remaining = left
    err.level = level
    return err


def batch_refusal(a: Applied, level: float, amount: float, usd: float, tokens: int,
                  lines: int, status: int, now: float) -> BudgetExceeded:
    """A batch refused when it is created: `level` without its own holds, `amount` what
    its lines would hold on `a`; the message adds the whole batch's worst case."""
    err = refusal(a, level, amount, status, now)
    err.message += (f" This batch's worst case is ${format_usd(usd)} ({tokens} tokens) over "
                    f"its {lines} lines, every line's held from its creation until it runs.")
    err.args = (err.message,)
    return err


@dataclass(frozen=True, slots=True)
class Degrade:
    """What budgets nearing their limits change for one turn (before any has to refuse
    it), and the budget that moved it, for the reply."""

    tier: str | None  # the cheaper tier it goes to
    summarise_above: int | None  # the lower summarising threshold
    budget: Applied
    used: float  # that budget's fraction used

    def what(self) -> str:
        return ",".join(w for w, on in (("tier", self.tier), ("history", self.summarise_above))
                        if on is not None)

    def why(self) -> str:
        return f"{self.budget.scope} {self.budget.metric} budget {self.used:.0%} used"


def _most_used(scope: str | None, applied: list[Applied], levels: list[float]
               ) -> tuple[float, Applied | None]:
    best: tuple[float, Applied | None] = (0.0, None)
    for a, lvl in zip(applied, levels, strict=True):
        if (scope is None or a.scope == scope) and a.limit > 0 and lvl / a.limit >= best[0]:
            best = (lvl / a.limit, a)
    return best


def degrade(rules: list[DowngradeRule], tier: str | None, applied: list[Applied],
            levels: list[float], summarising: bool = True) -> Degrade | None:
    """What the rules whose threshold is reached change: a tiered request goes to the
    `to` of the highest threshold reached; the history is summarised above the lowest
    `summarise_above` reached (not `summarising`: a summary's own call)."""
    to: DowngradeRule | None = None
    above: int | None = None
    why: tuple[float, Applied] | None = None
    for r in rules:
        used, a = _most_used(r.scope, applied, levels)
        if a is None or used < r.at:
            continue
        moved = False
        if (r.to is not None and tier is not None and r.to != tier
                and (r.source is None or r.source == tier) and (to is None or r.at > to.at)):
            to, moved = r, True
        if summarising and r.summarise_above is not None and (
                above is None or r.summarise_above < above):
            above, moved = r.summarise_above, True
        if moved and (why is None or used > why[0]):
            why = (used, a)
    if why is None:
        return None
    return Degrade(to.to if to is not None else None, above, why[1], why[0])


def remaining_usd(applied: list[Applied], levels: list[float]) -> float | None:
    """The least dollars left on any dollar budget that applies."""
    return min((max(a.limit - lvl, 0.0) for a, lvl in zip(applied, levels, strict=True)
                if a.metric == "usd"), default=None)
