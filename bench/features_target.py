"""Tollway with its features on, next to the default gateway in the overhead run (and
the store of bench/workers.py's gateways):

- `features`: every request carries a virtual key with a dollar budget and a per-key
  rpm limit (neither binds), so each one does the key lookup, the rate-limit take, the
  budget reserve and settle, and writes one ledger row (embedded store);
- `cached`: the same, plus the exact response cache on the alias; every request sends
  the same prompt, so all but the first are hits.
"""

from __future__ import annotations

from typing import Any

import harness
from harness import Server, Servers
from load import Auth

# A key whose limits never bind (a minute at these rates is ~10^5 requests) but are
# checked, taken and settled on every request.
KEY = {"name": "bench", "rpm": 100_000_000, "budgets": [{"usd": 1_000_000.0, "period": "day"}]}
PRICE = {"input": 1.0, "output": 2.0}  # USD per 1M tokens: budgets need a price


def config(sim_url: str, store: dict[str, Any], *, cache: bool = False) -> dict[str, Any]:
    """The simulator's model, priced, on `store`; with the exact cache if `cache`."""
    alias = {"cache": {"enabled": True}} if cache else {}
    # Every gateway echoes its ledger rows, as the published runs did (unset, the
    # embedded store's default is off).
    return {"models": harness.sim_models(sim_url, **alias), "prices": {"sim-model": PRICE},
            "store": store, "server": {"access_log": True}}


def start(servers: Servers, sim_url: str, name: str, port: int, *,
          cache: bool) -> tuple[Server, Auth]:
    """The gateway, ready, and a key for it (shown as `$KEY_NAME`)."""
    store = {"path": str(servers.work / f"{name}-store")}
    gw = harness.start_gateway(servers, f"gateway-{name}", config(sim_url, store, cache=cache),
                               port=port, master=True)
    return gw, Auth(harness.create_key(gw, KEY), f"$KEY_{name.upper()}")
