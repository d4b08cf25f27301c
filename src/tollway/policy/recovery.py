"""Budget counters that survive their store.

A store that can lose its counters (Redis restarted empty, failed over, flushed) marks
them current; without the mark a reserve takes nothing and says `stale`, and admission
refuses the request (503 with Retry-After; let through unmetered with
`budgets.on_store_error: open`) until the counters are rebuilt from the ledger —
PostgreSQL's record of what every request cost. Every replica checks the mark every
TICK seconds (a reserve that finds it gone wakes the check at once) and, while it is
gone:

- puts back the holds it took and has not settled: its requests are still running,
  and their worst cases must count again before anyone is admitted against them;
- writes its buffered ledger rows: requests settled before the loss must be in the
  ledger before it is read;
- tries to take the rebuild lease. The one replica that holds it waits GRACE (by then
  every replica has seen the loss and done both), reads the ledger and raises each
  current counter to its figure, then marks the counters current (store/redis.py
  says how a settle that lands meanwhile is counted once).

A settle the store did not take (it was unreachable) is kept and tried again every
tick: a hold outliving its settle would stop counting when it expires, and the spend
with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from tollway import tasks
from tollway.config import Config
from tollway.policy import budget
from tollway.store.base import Claim, LiveHold, Store

log = logging.getLogger("tollway")

TICK = 0.5  # how often a replica checks that the counters are current
# From the lease to the ledger read: two ticks for every replica to see the loss, put
# back its holds and write its rows, and time for the write.
GRACE = 2.0
LEASE = 60.0  # one rebuilder at a time; if it dies, another takes over after this
RETRY_AFTER = GRACE + 1.0  # what a request refused meanwhile is told
MAX_UNSETTLED = 100_000  # settles kept for the store to take; past it the oldest go

State = Literal["current", "rebuilding", "unknown"]


class Held:
    """What this process took from budgets and has not given back yet."""

    def __init__(self) -> None:
        # By hold id, until settled: its claims and expiry (a plain tuple: one is made
        # per budgeted request).
        self.holds: dict[str, tuple[list[Claim], float]] = {}
        self.unsettled: dict[str, list[tuple[str, float]]] = {}  # hold id -> charges
        self.lost = asyncio.Event()  # a reserve found the counters not current

    def unsettled_kept(self, hold_id: str, charges: list[tuple[str, float]]) -> None:
        self.unsettled[hold_id] = charges
        if len(self.unsettled) > MAX_UNSETTLED:
            del self.unsettled[next(iter(self.unsettled))]
            log.error("more than %d budget settles waiting for the store: the oldest is "
                      "dropped (the ledger still has its cost)", MAX_UNSETTLED)


class BudgetRecovery:
    def __init__(self, config: Config, store: Store, held: Held,
                 flush: Callable[[], Awaitable[object]],
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.held = held
        self._flush = flush  # writes this process's buffered ledger rows
        self.clock = clock
        self.state: State = "unknown"
        self.rebuilds = 0  # rebuilds this process did
        self._token = "rebuild_" + os.urandom(8).hex()
        self._checked = asyncio.Event()  # the counters are current, or cannot be known
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tollway-budget-recovery")

    async def checked(self) -> None:
        """Until the counters are current, or the store cannot say (then this process
        serves by the failure policy)."""
        await self._checked.wait()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await tasks.stop(task)
            with contextlib.suppress(Exception):  # another replica need not wait out the lease
                await self.store.budgets.release_rebuild(self._token)

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.check()
                failing = False
            except Exception as e:
                # Loud once, then quiet: the store is down until it is back.
                log.log(logging.DEBUG if failing else logging.WARNING,
                        "budget counters %s (tried again every %gs): %r",
                        "not rebuilt yet" if self.state == "rebuilding" else
                        "not checked, the store is unreachable", TICK, e)
                failing = True
                if self.state != "rebuilding":
                    self.state = "unknown"
                self._checked.set()  # a replica that cannot know serves by the policy
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.held.lost.wait(), TICK)
            self.held.lost.clear()

    async def check(self) -> None:
        """One round: settles kept are tried again; then, unless the counters are
        current, this process's holds and rows are handed back, and the rebuild done
        if the lease is ours."""
        b = self.store.budgets
        for hold_id, charges in list(self.held.unsettled.items()):
            await b.settle(hold_id, charges)
            self.held.unsettled.pop(hold_id, None)
        got = await b.claim_rebuild(self._token, LEASE)
        if got == "current":
            self.state = "current"
            self._checked.set()
            return
        if self.state != "rebuilding":
            log.warning("budget counters lost by the store: spending is paused while they "
                        "are rebuilt from the ledger")
        self.state = "rebuilding"
        await self._hand_back()
        if got == "mine":
            await self._rebuild()

    async def _hand_back(self) -> None:
        holds = [LiveHold(hold_id, claims, expires_at)
                 for hold_id, (claims, expires_at) in self.held.holds.items()]
        await self.store.budgets.restore(holds, self.clock())
        await self._flush()

    async def _rebuild(self) -> None:
        b, loop = self.store.budgets, asyncio.get_running_loop()
        t0 = loop.time()
        renewing = asyncio.create_task(self._renew())  # a long ledger read keeps the lease
        try:
            while (left := t0 + GRACE - loop.time()) > 0:
                await asyncio.sleep(min(TICK, left))
                await self._hand_back()
            counters = await self.recount()
            if not await b.commit_rebuild(self._token, sorted(counters.items())):
                return  # the lease lapsed and another replica took it
        except BaseException:
            with contextlib.suppress(Exception):
                await b.release_rebuild(self._token)
            raise
        finally:
            renewing.cancel()
        self.state, self.rebuilds = "current", self.rebuilds + 1
        self._checked.set()
        log.warning("budget counters rebuilt from the ledger: %d counters in %.1fs",
                    len(counters), loop.time() - t0)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(LEASE / 3)
            with contextlib.suppress(Exception):  # a lost lease shows at the commit
                await self.store.budgets.claim_rebuild(self._token, LEASE)

    async def recount(self) -> dict[str, float]:
        """What each current budget counter holds by the ledger, leaving out the rows
        of holds settled since the loss (the counters have those already)."""
        cfg, now = self.config.budgets, self.clock()
        keys = {rec.id: rec for rec in await self.store.keys.all() if rec.budgets}
        if not (cfg.global_ or cfg.teams or cfg.users or cfg.features or cfg.conversations
                or keys):
            return {}  # no budget anywhere: nothing to read
        day, month = budget.period_starts(now)
        groups = await self.store.ledger.charged(budget.ledger_fields(cfg, bool(keys)), day,
                                                 month, self.store.budgets.lost_settles)
        return budget.recounted(cfg, groups, keys, now)
