"""The data behind the web console's dashboard: GET /admin/dashboard/*, read by the
master key (everything) or a virtual key (only its own lineage's rows, budgets and
alerts). Every figure is computed by the store (store/dashboard.py); this module reads
the parameters, decides what the reader may see, and writes the JSON.

    GET /admin/dashboard/spend?bucket=&stack=&groups=&since=&until=&key=
                                                                   spend per bucket and group
    GET /admin/dashboard/stats?since=&until=&key=                  requests, errors, latency,
                                                                   cache, dollars, top lists
    GET /admin/dashboard/budgets                                   each budget, used and left
    GET /admin/dashboard/tail?limit=&model=&key=&status=&before=&since=&until=
                                                                   the newest rows; `next`
    GET /admin/dashboard/alerts?since=&until=&limit=               fired alerts, newest first

`since`/`until` are read as /admin/spend reads them; by default the last 24 hours.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, TypeVar

import msgspec
from starlette.routing import Route

from tollway.errors import Forbidden, InvalidRequest
from tollway.gateway import Gateway
from tollway.policy.budget import configured
from tollway.server.admin import (
    ANY_METHOD,
    Admin,
    Endpoint,
    Handler,
    Result,
    Viewer,
    cursor,
    window,
)
from tollway.server.asgi import Receive, Scope, query, whole_number
from tollway.store.dashboard import (
    BUCKETS,
    NAMED,
    STACKS,
    Bucket,
    Quantiles,
    Spent,
    Stack,
    Status,
    TailFilter,
    View,
    bucket_count,
    bucket_start,
    next_bucket,
)

DEFAULT_WINDOW = 86400.0  # seconds: the last 24 hours
MAX_BUCKETS = 10_000  # a series' points (hours of a year and more)
MAX_NAMED = 1000  # a series' named groups (the rest are one, "other")
TAIL_PAGE, MAX_TAIL_PAGE = 50, 1000
ALERTS_PAGE, MAX_ALERTS_PAGE = 100, 1000
STATUSES: tuple[Status, ...] = ("ok", "error")
S = TypeVar("S", bound=str)


def usd(x: float) -> float:
    # Prices are exact to the pico-dollar; rounding there only drops float-sum noise.
    return round(x, 12)


def group(s: Spent) -> dict[str, Any]:
    g = {"name": s.name, "cost_usd": usd(s.cost_usd), "requests": s.requests}
    return {**g, "other": True} if s.other else g


def quantiles(q: Quantiles) -> dict[str, float | None]:
    return {"p50": q.p50, "p95": q.p95}


def choice(q: dict[str, str], param: str, allowed: tuple[S, ...], default: S) -> S:
    """The parameter, one of `allowed` (`default` when absent or empty)."""
    value = q.get(param) or default
    for a in allowed:
        if a == value:
            return a
    raise InvalidRequest(f"{param}: one of {', '.join(allowed)}, got {value[:80]!r}",
                         param=param)


class Dashboard:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.store = gateway.store

    def view(self, scope: Scope, q: dict[str, str]) -> View:
        """The window asked for (the last 24 h by default) and whose rows: a virtual
        key's own; the master key's, everyone's or the `key` it names."""
        since, until = window(q)
        until = self.gateway.clock() if until is None else until
        since = until - DEFAULT_WINDOW if since is None else since
        if until <= since:
            raise InvalidRequest("since: must be before until (by default, now)",
                                 param="since")
        return View(since, until, self.whose(scope, q.get("key") or None))

    @staticmethod
    def whose(scope: Scope, key: str | None) -> str | None:
        viewer: Viewer = scope["tollway.viewer"]
        if viewer.key is None or key in (None, viewer.key):
            return key if viewer.key is None else viewer.key
        raise Forbidden(f"key: a virtual key reads only its own rows ({viewer.key}), not "
                        f"{key[:80]!r}'s.", param="key")

    async def _ledger(self) -> None:
        await self.gateway.ledger.flush()  # so every finished request is counted

    async def spend(self, scope: Scope, receive: Receive) -> Result:
        q = query(scope, ("bucket", "stack", "since", "until", "key", "groups"))
        bucket: Bucket = choice(q, "bucket", BUCKETS, "hour")
        stack: Stack = choice(q, "stack", STACKS, "none")
        named = whole_number(q.get("groups"), "groups", NAMED, 1, MAX_NAMED)
        view = self.view(scope, q)
        points = bucket_count(view.since, view.until, bucket)
        if points > MAX_BUCKETS:
            raise InvalidRequest(f"bucket: {bucket} over this window makes {points:,} points, "
                                 f"more than {MAX_BUCKETS:,}; use a longer bucket or a "
                                 "shorter window", param="bucket")
        await self._ledger()
        found = await self.store.dashboard.spend(view, bucket, stack, named)
        groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for t, s in found:
            groups[t].append(group(s))
        series, t = [], bucket_start(view.since, bucket)
        while t < view.until:  # every bucket of the window, those without rows empty
            series.append({"t": t, "groups": groups.pop(t, [])})
            t = next_bucket(t, bucket)
        return Result(200, {
            "bucket": bucket, "stack": stack, "since": view.since, "until": view.until,
            "key": view.key, "series": series,
            "total": {"cost_usd": usd(math.fsum(s.cost_usd for _, s in found)),
                      "requests": sum(s.requests for _, s in found)}})

    async def stats(self, scope: Scope, receive: Receive) -> Result:
        view = self.view(scope, query(scope, ("since", "until", "key")))
        await self._ledger()
        s = await self.store.dashboard.stats(view)
        return Result(200, {
            "since": view.since, "until": view.until, "key": view.key,
            "requests": s.requests,
            # errors: outcome error or refused (accounting/rows.FAILED_OUTCOMES): the
            # caller was answered an error, status >= 400; aborts and cut streams are not.
            "errors": s.errors, "error_rate": s.errors / s.requests if s.requests else 0.0,
            "latency_ms": quantiles(s.latency_ms), "ttft_ms": quantiles(s.ttft_ms),
            "cache": {"hits": s.cache_hits, "lookups": s.cache_lookups,
                      "hit_rate": s.cache_hits / s.cache_lookups if s.cache_lookups else 0.0,
                      "saved_usd": usd(s.saved_usd)},
            "cost_usd": usd(s.cost_usd),
            "tokens": {"input": s.input_tokens, "output": s.output_tokens},
            "top": {dim: [group(t) for t in top] for dim, top in s.top.items()}})

    async def budgets(self, scope: Scope, receive: Receive) -> Result:
        query(scope, ())
        viewer: Viewer = scope["tollway.viewer"]
        now = self.gateway.clock()
        keys = await self.gateway.outages.closed(
            "keys", "The key store is unreachable, so key budgets cannot be listed.",
            self.store.keys.all())
        found = configured(self.gateway.config.budgets, keys, now, viewer.key)
        levels = await self.gateway.outages.closed(
            "budgets", "The budget store is unreachable, so budgets cannot be read.",
            self.store.budgets.levels([a.counter for a in found], now))
        return Result(200, [
            {"scope": a.scope, "name": a.name, "period": a.period, "metric": a.metric,
             "limit": a.limit, "used": used, "remaining": max(a.limit - used, 0.0),
             "resets_at": a.resets_at} for a, used in zip(found, levels, strict=True)])

    async def tail(self, scope: Scope, receive: Receive) -> Result:
        q = query(scope, ("limit", "model", "key", "status", "before", "since", "until"))
        view = self.view(scope, q)
        only = TailFilter(
            limit=whole_number(q.get("limit"), "limit", TAIL_PAGE, 1, MAX_TAIL_PAGE),
            before=cursor(q["before"], "before") if q.get("before") else None,
            model=q.get("model") or None,
            status=choice(q, "status", STATUSES, "ok") if q.get("status") else None)
        await self._ledger()
        rows = await self.store.dashboard.tail(view, only)
        more = f"{rows[-1].ts!r}|{rows[-1].id}" if len(rows) == only.limit else None
        return Result(200, {"data": msgspec.to_builtins(rows), "next": more})

    async def alerts(self, scope: Scope, receive: Receive) -> Result:
        q = query(scope, ("since", "until", "limit"))
        view = self.view(scope, q)
        limit = whole_number(q.get("limit"), "limit", ALERTS_PAGE, 1, MAX_ALERTS_PAGE)
        fired = await self.store.alerts.fired(view.since, view.until, view.key, limit)
        return Result(200, {"data": [
            {"at": a.at, "rule": a.rule, "scope": a.scope, "name": a.name,
             "message": a.message, "detail": msgspec.json.decode(a.detail)} for a in fired]})


def dashboard_routes(gateway: Gateway) -> list[Route]:
    d = Dashboard(gateway)
    admin = Admin(gateway)

    def route(path: str, get: Handler) -> Route:
        return Route(path, Endpoint(admin, {"GET": get}, viewers=True), methods=ANY_METHOD)

    return [route("/admin/dashboard/spend", d.spend), route("/admin/dashboard/stats", d.stats),
            route("/admin/dashboard/budgets", d.budgets), route("/admin/dashboard/tail", d.tail),
            route("/admin/dashboard/alerts", d.alerts)]
