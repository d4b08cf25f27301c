"""Admission: may this request go upstream now, within its limits and budgets?

Inbound rate limits are taken first (exact sliding windows; they fail open: with the
shared store down each replica limits alone, in memory), then the worst case is
reserved on every budget that applies, all or none (failing closed unless
`budgets.on_store_error: open`; the same while the store's counters are being rebuilt
after it lost them, policy/recovery.py). Each takes something that `finish` gives back
with the real figures: the rate-limit entry is settled to the tokens used, the hold to
the real cost (a refusal or an error costs 0); a settle the store does not take is
kept and tried again.
"""

from __future__ import annotations

import msgspec

from tollway.accounting.settlement import Outcome, Releases, Settlement
from tollway.config import Config
from tollway.errors import Unavailable
from tollway.policy import budget, limits
from tollway.policy.auth import Caller
from tollway.policy.recovery import RETRY_AFTER, Held
from tollway.store.base import Store
from tollway.store.outage import Outages


class Admission(msgspec.Struct):
    """What a request was admitted with (reply headers, alerts). Filled as admission
    goes, so a refusal's reply still carries the rate-limit headers of what was taken."""

    ticket: limits.Ticket | None = None
    held: list[budget.Applied] = msgspec.field(default_factory=list)  # the budgets held
    remaining_usd: float | None = None  # the least left on a dollar budget, after the hold


class Hold(msgspec.Struct):
    """A reservation on budgets, settled once by `finish`."""

    id: str
    applied: list[budget.Applied]
    refused: bool = False  # the store took nothing: nothing to settle
    taken: bool = False  # the store said it took it


class Admitter:
    def __init__(self, config: Config, store: Store, outages: Outages,
                 held: Held | None = None) -> None:
        self.config = config
        self.store = store
        self.outages = outages
        self.held = held if held is not None else Held()
        b = config.budgets
        self._budgets = bool(b.global_ or b.teams or b.users or b.features or b.conversations)

    def budgets(self, caller: Caller, conversation: str | None, now: float
                ) -> list[budget.Applied]:
        """The budgets this request is charged to, in their current windows."""
        key = caller.key
        if not self._budgets and (key is None or not key.budgets):
            return []
        who = budget.Who(key_lineage=key.lineage if key is not None else None,
                         key_budgets=tuple(key.budgets) if key is not None else (),
                         team=caller.team, user=caller.user, feature=caller.feature,
                         conversation=conversation,
                         conversation_owner=caller.owner if conversation else None)
        return budget.applicable(self.config.budgets, who, now)

    def rate_limits(self, caller: Caller, alias: str) -> list[limits.Limit]:
        # Callers without a key (or the master key) are limited by their address.
        return limits.applicable(self.config.rate_limits, caller.key, caller.user,
                                      None if caller.key is not None or caller.master
                                      else caller.ip, alias)

    async def admit(self, out: Admission, rate: list[limits.Limit],
                    applied: list[budget.Applied], usd: float, tokens: int, now: float,
                    releases: Releases, hold_id: str) -> None:
        """Take the rate limits, then hold the worst case on every budget, recording
        both in `out`; raises the refusal (429, or the budget's status) naming what
        refused. `hold_id`: the request's ledger row id (a rebuild of the counters
        tells by it which rows it has counted)."""
        if rate:
            out.ticket = await self.take(rate, tokens, now, releases)
        if applied:
            out.remaining_usd = await self._reserve(hold_id, applied, usd, tokens, now,
                                                    releases)
            out.held = applied

    async def take(self, rate: list[limits.Limit], tokens: int, now: float,
                   releases: Releases) -> limits.Ticket:
        """The rate limits alone (a cache hit takes them with no tokens)."""
        ticket = await self.outages.open(
            "limits", "limiting in this process",
            limits.admit(self.store.limits, rate, tokens, now))
        if ticket is None:
            ticket = await limits.admit(self.store.fallback_limits, rate, tokens, now)
            ticket.local = True
        taken = ticket

        async def settle(_: Outcome, s: Settlement) -> None:
            store = self.store.fallback_limits if taken.local else self.store.limits
            await limits.settle(store, taken, s.tokens)

        releases.push("rate-limit entry", settle)
        return ticket

    async def _reserve(self, hold_id: str, applied: list[budget.Applied], usd: float,
                       tokens: int, now: float, releases: Releases) -> float | None:
        cfg, held = self.config.budgets, self.held
        hold = Hold(hold_id, applied)
        claims = budget.claims(applied, usd, tokens)
        expires_at = now + cfg.hold_seconds

        async def settle(_: Outcome, s: Settlement) -> None:
            held.holds.pop(hold.id, None)
            if hold.refused:
                return
            charges = budget.charges(applied, s.usd, s.tokens)
            try:
                await self.store.budgets.settle(hold.id, charges)
            except Exception as e:
                self.outages.failed("budgets", "settle kept, tried again", e)
                # (Nothing to keep for a hold that may never have been taken, at 0.)
                if hold.taken or any(amount for _, amount in charges):
                    held.unsettled_kept(hold.id, charges)

        # Pushed before the store is asked: if the client leaves while the reserve is in
        # flight, `finish` still settles the hold (to 0) instead of leaving it held until
        # it expires; the store never takes a hold that was settled first.
        releases.push("budget hold", settle)
        op = self.store.budgets.reserve(hold.id, claims, expires_at, now)
        if cfg.on_store_error == "open":
            got = await self.outages.open("budgets", "request let through unmetered", op)
            if got is None:
                return None
        else:
            got = await self.outages.closed(
                "budgets", "The budget store is unreachable, so spending is paused "
                "(budgets.on_store_error: closed).", op)
        if got.stale:  # the store lost its counters: none is taken until they are rebuilt
            held.lost.set()
            if cfg.on_store_error == "open":
                return None  # unmetered, but its settle still counts
            hold.refused = True
            raise Unavailable(
                "The budget store lost its counters and they are being rebuilt from the "
                "ledger, so spending is paused for a few seconds "
                "(budgets.on_store_error: closed).", retry_after=RETRY_AFTER)
        if got.refused is not None:
            hold.refused = True
            i = got.refused
            raise budget.refusal(applied[i], got.levels[i], claims[i].amount,
                                 cfg.refuse_status, now)
        hold.taken = True
        held.holds[hold.id] = (claims, expires_at)
        return budget.remaining_usd(applied, got.levels)
