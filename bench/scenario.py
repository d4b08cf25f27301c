"""The overhead benchmark's data: what to run (Plan) and what each run measured."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TARGETS = ("direct", "floor", "gateway")
# The raw floor only proxies JSON replies, so it runs in the non-streaming throughput runs.
WITH_RAW = (*TARGETS, "raw")
LABEL = {"direct": "(a) direct", "floor": "(b) floor proxy", "gateway": "(c) gateway",
         "raw": "(d) raw floor"}

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


FULL = Plan(repeats=3, duration=5.0, lat_repeats=5, lat_duration=3.0, warmup=1.0,
            connections=64, rates=(200, 500, 1000), stream_rates=(20, 100))
QUICK = Plan(repeats=1, duration=2.0, lat_repeats=1, lat_duration=2.0, warmup=0.5,
             connections=64, rates=(500,), stream_rates=(50,))


@dataclass
class Scenario:
    key: str
    title: str
    kind: Kind
    params: dict[str, Any]
    targets: tuple[str, ...] = TARGETS
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t in self.targets:
            self.runs.setdefault(t, [])

    def values(self, target: str, metric: str) -> list[float]:
        return [float(r[metric]) for r in self.runs[target]]

    def ratio(self, num: str, den: str, metric: str) -> list[float]:
        """Per-repeat ratio, so both sides of each ratio saw the same machine state."""
        return [a / b for a, b in zip(self.values(num, metric), self.values(den, metric),
                                      strict=True) if b]

    def added(self, target: str, metric: str) -> list[float]:
        """Per-repeat difference from the direct call (what the proxy adds)."""
        return [a - b for a, b in zip(self.values(target, metric),
                                      self.values("direct", metric), strict=True)]
