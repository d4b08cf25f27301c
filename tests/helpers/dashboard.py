"""The dashboard's figures computed in Python from ledger rows (as /admin/ledger shows
them), by the definitions the dashboard documents, for the tests to compare with what
the stores compute: labels as /admin/spend's groups, UTC buckets (the SQL's, as
Python computes them: dashboard.bucket_start), errors as outcome
error or refused, cache hits and lookups, percentile_cont, top lists by dollars (to the
pico-dollar), then requests, then name."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from tollway.store.dashboard import Bucket, bucket_start

Row = dict[str, Any]

LABELS = {
    "model": lambda r: r["model"] or r["model_asked"] or "(none)",
    "key": lambda r: r["key_lineage"] or "(no key)",
    "user": lambda r: r["user"] or "(none)",
    "team": lambda r: r["team"] or "(none)",
    "feature": lambda r: r["feature"] or "(none)",
    "none": lambda r: "all",
}
TOP_DIMS = ("key", "user", "feature", "model")


def failed(r: Row) -> bool:
    return r["outcome"] in ("error", "refused")


def spend(rows: Iterable[Row], bucket: Bucket,
          stack: str) -> dict[tuple[int, str], tuple[float, int]]:
    """(bucket start, group) -> (dollars, requests)."""
    out: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for r in rows:
        t = out[(bucket_start(r["ts"], bucket), LABELS[stack](r))]
        t[0] += r["cost_usd"]
        t[1] += 1
    return {k: (v[0], int(v[1])) for k, v in out.items()}


def percentile(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    pos = p * (len(s) - 1)
    lo = math.floor(pos)
    frac = pos - lo
    return s[lo] if frac == 0 else s[lo] + frac * (s[lo + 1] - s[lo])


def top(rows: Sequence[Row], dim: str, n: int = 5) -> list[tuple[str, float, int]]:
    groups: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for r in rows:
        g = groups[LABELS[dim](r)]
        g[0] += r["cost_usd"]
        g[1] += 1
    ranked = sorted(groups.items(), key=lambda kv: (-round(kv[1][0], 12), -kv[1][1], kv[0]))
    return [(name, c, int(k)) for name, (c, k) in ranked[:n]]


def stats(rows: Sequence[Row]) -> dict[str, Any]:
    """Every figure of /admin/dashboard/stats, in its shape."""
    n = len(rows)
    errors = sum(map(failed, rows))
    hits = sum(r["cache"] in ("hit", "semantic-hit") for r in rows)
    lookups = sum(r["cache"] in ("hit", "semantic-hit", "miss") for r in rows)
    latency = [r["latency_ms"] for r in rows]
    ttft = [r["ttft_ms"] for r in rows if r["ttft_ms"] is not None]
    return {
        "requests": n, "errors": errors, "error_rate": errors / n if n else 0.0,
        "latency_ms": {"p50": percentile(latency, 0.5), "p95": percentile(latency, 0.95)},
        "ttft_ms": {"p50": percentile(ttft, 0.5), "p95": percentile(ttft, 0.95)},
        "cache": {"hits": hits, "lookups": lookups,
                  "hit_rate": hits / lookups if lookups else 0.0,
                  "saved_usd": sum(r["saved_usd"] for r in rows)},
        "cost_usd": sum(r["cost_usd"] for r in rows),
        "tokens": {"input": sum(r["input_tokens"] for r in rows),
                   "output": sum(r["output_tokens"] for r in rows)},
        "top": {dim: [{"name": name, "cost_usd": c, "requests": k}
                      for name, c, k in top(rows, dim)] for dim in TOP_DIMS},
    }


def same(got: Any, want: Any, where: str = "") -> None:
    """`got` equals `want`: numbers to float-sum noise (1e-9 relative, 1e-12 absolute),
    everything else exactly; the assertion names where they differ."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) >= set(want), (where, got, want)
        for k, v in want.items():
            same(got[k], v, f"{where}.{k}")
    elif isinstance(want, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(want), (where, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, int | float) and math.isclose(
            got, want, rel_tol=1e-9, abs_tol=1e-12), (where, got, want)
    else:
        assert got == want, (where, got, want)
