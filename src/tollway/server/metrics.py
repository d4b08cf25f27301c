"""GET /metrics: the Prometheus exposition. Budget gauges are read from the store at
scrape time; the upstreams' breakers, load and pacing queues from the router."""

from __future__ import annotations

from tollway.gateway import Gateway
from tollway.observe import UpstreamLevel
from tollway.policy import budget
from tollway.server.asgi import Receive, Scope, Send, edge


class Metrics:
    """Prometheus exposition. Budget gauges are read from the store at scrape time."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        # The store down: the rest of the metrics still matter.
        budgets = await gateway.outages.open("budgets", "metrics without budget levels",
                                             budget_levels(gateway)) or []
        body = gateway.observer.render(budgets, gateway.ledger.pending, upstream_levels(gateway))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", edge(scope).request_id.encode())]})
        await send({"type": "http.response.body", "body": body})


def upstream_levels(gateway: Gateway) -> list[UpstreamLevel]:
    out = []
    for alias, deps in gateway.deployments().items():
        for d in deps:
            up = gateway.router.upstreams[d]
            out.append(UpstreamLevel(alias, d.provider, d.model, up.breaker.state,
                                     up.load.in_flight, up.pacer.snapshot().queued))
    return out


async def budget_levels(gateway: Gateway) -> list[tuple[str, str, str, str, float]]:
    """What is left of every named budget: global, teams, features and keys."""
    cfg, now = gateway.config.budgets, gateway.clock()
    applied: list[budget.Applied] = []
    who = [budget.Who()]
    who += [budget.Who(team=t) for t in cfg.teams]
    who += [budget.Who(feature=f) for f in cfg.features if f != "*"]
    who += [budget.Who(key_lineage=k.lineage, key_budgets=tuple(k.budgets))
            for k in await gateway.store.keys.all() if k.budgets and k.refusal(now) is None]
    seen: set[str] = set()
    for w in who:
        for a in budget.applicable(cfg, w, now):
            if a.counter not in seen:
                seen.add(a.counter)
                applied.append(a)
    levels = await gateway.store.budgets.levels([a.counter for a in applied], now)
    return [(a.scope, a.name, a.metric, a.period, max(a.limit - lvl, 0.0))
            for a, lvl in zip(applied, levels, strict=True)]
