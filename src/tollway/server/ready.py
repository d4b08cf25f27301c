"""Readiness: can this process serve? Checks the store directory and each provider
without spending money (no paid API is called), and says which part of the store is
down and whether the budget counters are current.

A store part that is down does not make the process unready: it serves by the
failure policy (store/outage.py), and so would every other replica on that store —
taking them all out of rotation would turn a degraded service into none."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tollway.config import Config

if TYPE_CHECKING:
    from tollway.gateway import Gateway


async def readiness(config: Config, gateway: Gateway) -> dict[str, Any]:
    store = _store_check(config)
    parts = await gateway.store.health()
    store["parts"] = {name: {"up": h.up, "error": h.error} for name, h in parts.items()}
    store["down"] = sorted(name for name, h in parts.items() if not h.up)
    store["budget_counters"] = gateway.recovery.state
    providers: dict[str, Any] = {}
    for alias, mc in config.models.items():
        for d in mc.deployments:
            key = f"{d.provider}/{d.model}"
            if key in providers:
                continue
            check = getattr(gateway.providers[d.provider], "ready", None)
            providers[key] = await check(d.model) if check is not None else {"ok": True,
                                                                             "alias": alias}
    ready = store["ok"] and all(p["ok"] for p in providers.values())
    return {"ready": ready, "store": store, "providers": providers,
            "upstreams": upstreams(gateway)}


def upstreams(gateway: Gateway) -> dict[str, list[dict[str, Any]]]:
    """Per alias, each deployment's circuit breaker and outbound pacing. Open breakers
    do not make the process unready: it still answers (with 503 and Retry-After)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for alias, deps in gateway.deployments().items():
        rows = []
        for d in deps:
            up = gateway.router.upstreams[d]
            b, pace = up.breaker.snapshot(), up.pacer.snapshot()
            rows.append({"provider": d.provider, "model": d.model, "priority": d.priority,
                         "weight": d.weight, "breaker": b.state, "retry_in": b.retry_in,
                         "window_calls": b.calls, "window_failures": b.failures,
                         "in_flight": up.load.in_flight, "queued": pace.queued,
                         "rpm": pace.rpm, "tpm": pace.tpm})
        out[alias] = rows
    return out


def _store_check(config: Config) -> dict[str, Any]:
    path = Path(config.store.path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        ok = os.access(path, os.W_OK)
    except OSError:
        ok = False
    return {"ok": ok, "kind": config.store.kind, "path": str(path.resolve())}
