"""Admission: may this request go upstream now, within its limits and budgets?

Inbound rate limits are taken first (exact sliding windows; they fail open: with the
shared store down each replica limits alone, in memory), then the worst case is
reserved on every budget that applies, all or none (failing closed unless
`budgets.on_store_error: open`; the same while the store's counters are being rebuilt
after it lost them, policy/recovery.py). Each takes something that `finish` gives back
with the real figures: the rate-limit entry is settled to the tokens used, the hold to
the real cost (a refusal or an error costs 0); a settle the store does not take is
kept and tried again.

A batch is admitted when it is created: `hold_many` holds every line's worst case until
the batch expires, all or none, each under the line's ledger row id. A line then runs
`prepaid`: it reserves nothing (and takes no rate limit: the batch paces its lines, and
a line refused could not run again under its row id), and its `finish` settles its hold
to the real cost like any request's. `release_many` gives back the holds of lines that
will not run. A hold settles once (the stores keep the first settle), so a line run
again after a crash is counted once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial

import msgspec

from tollway.accounting import settlement
from tollway.accounting.settlement import Outcome, Releases, Settlement
from tollway.config import Config
from tollway.errors import BudgetExceeded, Unavailable
from tollway.policy import budget, limits
from tollway.policy.auth import Caller
from tollway.policy.recovery import RETRY_AFTER, Held
from tollway.store.base import Claim, Store
from tollway.store.outage import Outages


class Hold(msgspec.Struct):
    """A reservation on budgets, settled once by `finish`."""

    id: str
    applied: list[budget.Applied]  # what its settle charges (a prepaid line's: named late)
    refused: bool = False  # the store took nothing: nothing to settle
    taken: bool = False  # the store said it took it


class Admission(msgspec.Struct):
    """What a request was admitted with (reply headers, alerts). Filled as admission
    goes, so a refusal's reply still carries the rate-limit headers of what was taken."""

    ticket: limits.Ticket | None = None
    held: list[budget.Applied] = msgspec.field(default_factory=list)  # the budgets held
    remaining_usd: float | None = None  # the least left on a dollar budget, after the hold
    prepaid: Hold | None = None  # a batch line's: the hold its batch took for it


class LineHold(msgspec.Struct, frozen=True):
    """One batch line's worst case, held when its batch is created: on the budgets the
    line is charged to, under its hold id (the line's ledger row id)."""

    hold_id: str
    applied: list[budget.Applied]
    usd: float
    tokens: int


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
            hold = Hold(hold_id, applied)
            # Pushed before the store is asked: if the client leaves while the reserve
            # is in flight, `finish` still settles the hold (to 0) instead of leaving it
            # held until it expires; the store never takes a hold that was settled first.
            releases.push("budget hold", partial(self._settle, hold))
            out.remaining_usd = await self._reserve(
                hold, budget.claims(applied, usd, tokens),
                now + self.config.budgets.hold_seconds, now)
            out.held = applied

    async def hold_many(self, lines: Sequence[LineHold], expires_at: float,
                        now: float) -> None:
        """Hold every line's worst case until `expires_at` (a batch's, when it is
        created), all or none: on the first refusal the holds taken are settled at 0
        and the refusal raised — the budget, its limit, what is left without this
        batch's holds, and what the whole batch needs. Failing stores answer as for a
        request (budgets.on_store_error). A hold id is never to be held again once given
        back: the store takes no hold that was settled."""
        holds: list[tuple[LineHold, Hold]] = []
        try:
            for line in lines:
                if line.applied:
                    hold = Hold(line.hold_id, line.applied)
                    holds.append((line, hold))  # before the store is asked, as `admit` does
                    await self._reserve(hold, budget.claims(line.applied, line.usd,
                                                            line.tokens), expires_at, now)
        except BaseException as e:
            for _, hold in holds:
                await self._settle(hold, None, settlement.ZERO)
            if isinstance(e, BudgetExceeded) and isinstance(e.budget, budget.Applied):
                raise self._batch_refusal(e.budget, e.level, lines, holds, now) from None
            raise

    def prepaid(self, hold_id: str, releases: Releases) -> Admission:
        """A batch line's admission, when it begins: its worst case was held with its
        batch (`hold_many`, `hold_id` the line's row id), so nothing is reserved; however
        the line ends, `finish` settles that hold — to the real cost on the budgets
        `charge` names, or to 0 if it ends before (routing, the cache, the input)."""
        hold = Hold(hold_id, [], taken=True)
        releases.push("budget hold", partial(self._settle, hold))
        return Admission(prepaid=hold)

    @staticmethod
    def charge(out: Admission | None, applied: list[budget.Applied]) -> None:
        """A prepaid line's step 10 (where a request reserves): the budgets its real
        cost is settled on — those that apply as it runs (a new window's, if its batch
        was created in the last)."""
        assert out is not None and out.prepaid is not None, "not a prepaid line"
        out.held = out.prepaid.applied = applied

    async def release_many(self, hold_ids: Iterable[str]) -> None:
        """Give back the holds of lines that will not run (a batch cancelled, or expired
        with lines left), each settled at 0: the counters then hold exactly what the
        lines that ran cost. A line that ran has settled its hold: this second settle
        counts for nothing — so never release a line still running (its own settle
        would come second)."""
        for hold_id in hold_ids:
            await self._settle(Hold(hold_id, [], taken=True), None, settlement.ZERO)

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

    async def _reserve(self, hold: Hold, claims: list[Claim], expires_at: float,
                       now: float) -> float | None:
        """Ask the store for `hold`, under the failure policy; the least dollars left
        (None: let through unmetered). Raises the refusal naming the budget."""
        cfg, held = self.config.budgets, self.held
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
            raise budget.refusal(hold.applied[i], got.levels[i], claims[i].amount,
                                 cfg.refuse_status, now)
        hold.taken = True
        held.holds[hold.id] = (claims, expires_at)
        return budget.remaining_usd(hold.applied, got.levels)

    async def _settle(self, hold: Hold, _: Outcome | None, s: Settlement) -> None:
        """Release `hold` and charge its budgets what was spent: a request's release
        (pushed as `partial(self._settle, hold)`), or a line's that never ran (at 0)."""
        held = self.held
        held.holds.pop(hold.id, None)
        if hold.refused:
            return
        charges = budget.charges(hold.applied, s.usd, s.tokens)
        try:
            await self.store.budgets.settle(hold.id, charges)
        except Exception as e:
            self.outages.failed("budgets", "settle kept, tried again", e)
            # (Nothing to keep for a hold that may never have been taken, at 0.)
            if hold.taken or any(amount for _, amount in charges):
                held.unsettled_kept(hold.id, charges)

    def _batch_refusal(self, a: budget.Applied, level: float, lines: Sequence[LineHold],
                       holds: list[tuple[LineHold, Hold]], now: float) -> BudgetExceeded:
        """The refusal of a batch, on budget `a`: what is left once this batch's own
        holds are given back, against what all its lines would hold on it."""
        def on_a(line: LineHold) -> float:
            if not any(x.counter == a.counter for x in line.applied):
                return 0.0
            return line.usd if a.metric == "usd" else float(line.tokens)

        ours = sum(on_a(line) for line, hold in holds if hold.taken)
        return budget.batch_refusal(a, level - ours, sum(map(on_a, lines)),
                                    sum(line.usd for line in lines),
                                    sum(line.tokens for line in lines), len(lines),
                                    self.config.budgets.refuse_status, now)
