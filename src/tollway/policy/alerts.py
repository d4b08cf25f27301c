"""Spend alerts: a budget passing a threshold (e.g. 80%), or the hour's spend passing
a limit. Each fires once per window (the store decides who is first, so a fleet
fires once too), to the log, to an optional webhook and to the store (the dashboard
lists them: /admin/dashboard/alerts).

Everything here runs in background tasks after a request is finished: an alert
never delays or fails a request. Webhook deliveries are retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Coroutine
from typing import Any

import aiohttp
import msgspec

from tollway.accounting.prices import format_usd
from tollway.config import AlertsConfig
from tollway.policy.budget import Applied, window
from tollway.providers.http import Transport
from tollway.store.base import FiredAlert, Store

log = logging.getLogger("tollway.alerts")


class Alert(msgspec.Struct, kw_only=True):
    kind: str  # "budget" | "hourly_spend"
    message: str
    at: float
    window: str
    threshold: float  # a fraction for budgets, dollars for hourly spend
    level: float  # what was used (USD or tokens)
    limit: float
    scope: str | None = None
    name: str | None = None
    metric: str | None = None
    period: str | None = None


class Alerts:
    def __init__(self, cfg: AlertsConfig, store: Store, transport: Transport) -> None:
        self.cfg = cfg
        self.store = store
        self.transport = transport  # the gateway's: webhooks share its connection pool
        self.fired: list[Alert] = []  # this process's, newest last (bounded)
        self._tasks: set[asyncio.Task[None]] = set()

    def after(self, applied: list[Applied], usd: float, now: float) -> None:
        """Called once per finished request (at `now`) with the budgets it was charged
        to; the check runs later, but counts in the window the request finished in."""
        budgets = bool(applied and self.cfg.budget_thresholds)
        hourly = self.cfg.hourly_spend_usd is not None and usd > 0
        if budgets or hourly:
            self._spawn(self._check(applied if budgets else [], usd if hourly else 0.0, now))

    async def close(self) -> None:
        """Let checks and deliveries under way finish (bounded), then stop."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=5)
            for t in pending:
                t.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, applied: list[Applied], usd: float, now: float) -> None:
        try:
            if applied:
                levels = await self.store.budgets.levels([a.counter for a in applied], now)
                for a, level in zip(applied, levels, strict=True):
                    for t in sorted(self.cfg.budget_thresholds, reverse=True):
                        if level >= t * a.limit:
                            await self._budget(a, t, level, now)
                            break  # the highest threshold passed stands for the lower ones
            if usd:
                wid, ends = window("hour", now)
                level = await self.store.budgets.add(f"global//usd/{wid}", usd)
                limit = self.cfg.hourly_spend_usd or 0.0
                if level >= limit and await self.store.once.first(f"alert/hourly/{wid}",
                                                                   ends or math.inf):
                    self._fire(Alert(kind="hourly_spend", at=now, window=wid, threshold=limit,
                                     level=level, limit=limit,
                                     message=f"Spend this hour is ${format_usd(level)}, past "
                                             f"the alert threshold of ${format_usd(limit)}."))
        except Exception:
            log.exception("alert check failed")

    async def _budget(self, a: Applied, t: float, level: float, now: float) -> None:
        until = a.resets_at if a.resets_at is not None else math.inf
        if not await self.store.once.first(f"alert/{a.counter}/{t}", until):
            return
        used = (f"${format_usd(level)} of ${format_usd(a.limit)}" if a.metric == "usd"
                else f"{int(level)} of {int(a.limit)} tokens")
        self._fire(Alert(kind="budget", at=now, window=a.counter.rsplit("/", 1)[1],
                         threshold=t, level=level, limit=a.limit, scope=a.scope, name=a.name,
                         metric=a.metric, period=a.period,
                         message=f"{a.describe().capitalize()} is {level / a.limit:.0%} used "
                                 f"({used}); alert threshold {t:.0%}."))

    def _fire(self, alert: Alert) -> None:
        log.warning("ALERT %s", alert.message)
        self.fired = [*self.fired[-99:], alert]
        self._spawn(self._record(alert))
        if self.cfg.webhook_url:
            self._spawn(self._deliver(alert, self.cfg.webhook_url))

    async def _record(self, alert: Alert) -> None:
        try:
            await self.store.alerts.record(FiredAlert(
                alert.at, alert.kind, alert.scope or "global", alert.name or "",
                alert.message, msgspec.json.encode(alert)))
        except Exception as e:  # it went to the log (and the webhook) all the same
            log.error("recording an alert failed (%r): %s", e, alert.message)

    async def _deliver(self, alert: Alert, url: str) -> None:
        body = msgspec.json.encode(alert)
        delay = 0.5
        for attempt in range(1, self.cfg.webhook_attempts + 1):
            try:
                async with self.transport.session().post(
                        url, data=body, headers={"content-type": "application/json"},
                        timeout=aiohttp.ClientTimeout(total=10)) as r:
                    if r.status < 300:
                        return
                    why = f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError) as e:
                why = str(e) or type(e).__name__
            if attempt < self.cfg.webhook_attempts:
                await asyncio.sleep(delay)  # backoff between deliveries, not a test wait
                delay = min(delay * 2, 30.0)
        log.error("alert webhook %s failed after %d attempts (%s): %s", url,
                  self.cfg.webhook_attempts, why, alert.message)
