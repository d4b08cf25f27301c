"""The overhead benchmark's data: what to run (Plan) and what each run measured."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TARGETS = ("direct", "floor", "gateway")
# Against the simulator: Tollway with keys, budgets, rate limits and the ledger on, and
# LiteLLM's proxy, next to the three above.
SIM = (*TARGETS, "features", "litellm")
# The exact cache's hits only in the JSON runs; the raw floor only proxies JSON replies.
JSON = (*TARGETS, "features", "cached", "litellm", "raw")
WITH_RAW = (*TARGETS, "raw")
PROXIES = ("floor", "gateway", "features", "cached", "litellm", "raw")
LABEL = {"direct": "(a) direct", "floor": "(b) floor proxy", "gateway": "(c) gateway",
         "features": "(c1) gateway + keys, budgets, limits, ledger",
         "cached": "(c2) c1 + exact cache, all hits", "litellm": "(d) LiteLLM proxy",
         "raw": "(e) raw floor"}

Run = dict[str, Any]  # one measurement: wrk's or loadgen's figures plus CPU readings
Kind = Literal["throughput", "latency", "stream_latency", "stream_throughput"]


@dataclass(frozen=True)
class Plan:
    repeats: int  # throughput and streaming scenarios
    duration: float  # measured seconds per closed-loop or streaming run
    lat_repeats: int  # sub-millisecond differences need more repeats
    lat_duration: float  # measured seconds per constant-rate JSON run
    warmup: float  # open-loop seconds sent before measuring
    connections: int  # wrk's closed-loop concurrency
    rates: tuple[float, ...]  # non-streaming requests/s, open loop
    stream_rates: tuple[float, ...]  # streams/s against the slow-token simulator
    token_ms: float = 20.0
    stream_tokens: int = 50
    timeout: float = 3.0  # open loop: a request slower than this counts as failed


# Sized so that `make bench` (every benchmark) fits in 15 minutes on 2 cores.
FULL = Plan(repeats=3, duration=3.0, lat_repeats=3, lat_duration=2.0, warmup=0.5,
            connections=64, rates=(200, 500, 1000), stream_rates=(20,))
QUICK = Plan(repeats=1, duration=2.0, lat_repeats=1, lat_duration=2.0, warmup=0.5,
             connections=64, rates=(500,), stream_rates=(20,))


@dataclass
class Scenario:
    key: str
    title: str
    kind: Kind
    params: dict[str, Any]
    targets: tuple[str, ...] = TARGETS
    runs: dict[str, list[Run]] = field(default_factory=dict)
    peak_rss_kib: dict[str, int] = field(default_factory=dict)  # per proxy, this scenario
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for t in self.targets:
            self.runs.setdefault(t, [])

    def values(self, target: str, metric: str) -> list[float]:
        return [float(r[metric]) for r in self.runs[target]]

    def by_repeat(self, target: str, metric: str) -> dict[int, float]:
        return {int(r["repeat"]): float(r[metric]) for r in self.runs[target]}

    def ratio(self, num: str, den: str, metric: str) -> list[float]:
        """Per-repeat ratio, so both sides of each ratio saw the same machine state."""
        a, b = self.by_repeat(num, metric), self.by_repeat(den, metric)
        return [a[k] / b[k] for k in sorted(a.keys() & b.keys()) if b[k]]

    def added(self, target: str, metric: str) -> list[float]:
        """Per-repeat difference from the direct call (what the proxy adds)."""
        a, d = self.by_repeat(target, metric), self.by_repeat("direct", metric)
        return [a[k] - d[k] for k in sorted(a.keys() & d.keys())]
