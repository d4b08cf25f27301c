"""Tollway with its features on, next to the default gateway in the overhead run:

- `features`: every request carries a virtual key with a dollar budget and a per-key
  rpm limit (neither binds), so each one does the key lookup, the rate-limit take, the
  budget reserve and settle, and writes one ledger row (embedded store);
- `cached`: the same, plus the exact response cache on the alias; every request sends
  the same prompt, so all but the first are hits.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import harness
from harness import Auth, Server, Servers

KEY_RPM = 100_000_000  # never binds: a minute at these rates is ~10^5 requests
KEY_BUDGET = [{"usd": 1_000_000.0, "period": "day"}]
PRICE = {"input": 1.0, "output": 2.0}  # USD per 1M tokens: budgets need a price
MASTER = "bench-master-" + secrets.token_hex(8)


def config(work: Path, name: str, upstream_port: int, *, cache: bool) -> Path:
    path = work / f"gateway-{name}.yaml"
    cached = "    cache: {enabled: true}\n" if cache else ""
    path.write_text(harness.sim_models_yaml(upstream_port, cached) + f"""prices:
  sim-model: {json.dumps(PRICE)}
store:
  path: {work / name}-store
""")
    return path


def create_key(url: str) -> str:
    body = {"name": "bench", "rpm": KEY_RPM, "budgets": KEY_BUDGET}
    harness.COMMANDS.append(f"curl -X POST {url}/admin/keys -H 'Authorization: Bearer "
                            "$TOLLWAY_MASTER_KEY' -H 'Content-Type: application/json' "
                            f"-d '{json.dumps(body)}'")
    reply = harness.http("POST", url + "/admin/keys", json.dumps(body).encode(), MASTER)
    key: str = json.loads(reply)["key"]
    return key


def start(servers: Servers, work: Path, name: str, upstream_port: int, port: int, *,
          cache: bool) -> tuple[Server, Auth]:
    argv = [*harness.tollway_argv(), "serve", "--port", str(port), "--config",
            str(config(work, name, upstream_port, cache=cache))]
    server = servers.start(name, argv, {"TOLLWAY_MASTER_KEY": MASTER},
                           {"TOLLWAY_MASTER_KEY": "$TOLLWAY_MASTER_KEY"})
    url = f"http://127.0.0.1:{port}"
    harness.wait_ready(server, url + "/health")
    return server, Auth(create_key(url), f"$KEY_{name.upper()}")
