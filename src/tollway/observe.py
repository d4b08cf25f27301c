"""What every finished request tells the operator: Prometheus metrics and one JSON
log line, both made from its ledger row.

The hot path only bumps plain dicts and lists (about a microsecond); the
Prometheus families are built from them at scrape time by a collector. The access
log is written to a buffered stream and flushed every second, not per line: a
`logging` call plus a flush per request cost more than the rest of the accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from tollway import tasks
from tollway.accounting.rows import LedgerRow
from tollway.types import Deployment

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           120.0, 300.0)
_encode = msgspec.json.Encoder().encode


class _Hist:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last is +Inf
        self.total = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(BUCKETS, v)] += 1
        self.total += v

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


BudgetLevel = tuple[str, str, str, str, float]  # scope, name, metric, period, remaining


@dataclass(frozen=True, slots=True)
class UpstreamLevel:
    alias: str
    provider: str
    model: str
    breaker: str  # closed | half_open | open
    in_flight: int
    queued: int


BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class Observer:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.tokens: dict[tuple[str, str], list[int]] = {}  # input, output, cached
        self.cost: dict[tuple[str, str], float] = {}
        self.latency: dict[tuple[str, str, str], _Hist] = {}
        self.ttft: dict[tuple[str, str], _Hist] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.retries: dict[tuple[str, str], int] = {}
        self.store_errors: dict[str, int] = {}  # by part: keys, limits, budgets
        self.fallbacks: dict[tuple[str, str], int] = {}  # (from, to)
        self.cache: dict[tuple[str, str], int] = {}  # (alias, hit|semantic-hit|miss|bypass)
        self.saved: dict[str, float] = {}  # by alias: what cache hits would have cost
        self.guard_actions: dict[tuple[str, str], int] = {}  # (guard, action)
        # POST /v1/messages/count_tokens: (model, provider, counted_by, status)
        self.token_counts: dict[tuple[str, str, str, str], int] = {}
        self._scrape: tuple[list[BudgetLevel], int, list[UpstreamLevel]] = ([], 0, [])
        self.registry.register(_Families(self))
        self._log: BinaryIO | None = None
        self._flusher: asyncio.Task[None] | None = None

    def request(self, row: LedgerRow, retried: Sequence[Deployment] = ()) -> None:
        """`retried`: the deployment each upstream call beyond the first went to."""
        model, provider = row.model or row.model_asked or "-", row.provider or "-"
        status = str(row.status)
        key = (model, provider, status, row.outcome)
        self.requests[key] = self.requests.get(key, 0) + 1
        mp = (model, provider)
        t = self.tokens.get(mp)
        if t is None:
            t = self.tokens[mp] = [0, 0, 0]
        t[0] += row.input_tokens
        t[1] += row.output_tokens
        t[2] += row.cached_tokens
        if row.cost_usd:
            self.cost[mp] = self.cost.get(mp, 0.0) + row.cost_usd
        lk = (model, provider, status)
        h = self.latency.get(lk)
        if h is None:
            h = self.latency[lk] = _Hist()
        h.observe(row.latency_ms / 1000)
        if row.ttft_ms is not None:
            h = self.ttft.get(mp)
            if h is None:
                h = self.ttft[mp] = _Hist()
            h.observe(row.ttft_ms / 1000)
        if retried:
            for dep in retried:
                rk = (dep.model, dep.provider)
                self.retries[rk] = self.retries.get(rk, 0) + 1
        if row.fallback_from:
            fk = (row.fallback_from, model)
            self.fallbacks[fk] = self.fallbacks.get(fk, 0) + 1
        if row.guards:
            for decision in row.guards.split(","):
                guard, _, rest = decision.partition(":")
                gk = (guard, rest.partition(":")[0])
                self.guard_actions[gk] = self.guard_actions.get(gk, 0) + 1
        if row.cache is not None:
            ck = (row.model_asked or "-", row.cache)
            self.cache[ck] = self.cache.get(ck, 0) + 1
            if row.saved_usd:
                self.saved[ck[0]] = self.saved.get(ck[0], 0.0) + row.saved_usd
        if self._log is not None:
            self._log.write(_encode(row) + b"\n")

    def token_count(self, model: str, provider: str, counted_by: str, status: int) -> None:
        """A count_tokens call (no ledger row: nothing was generated or billed)."""
        k = (model, provider, counted_by, str(status))
        self.token_counts[k] = self.token_counts.get(k, 0) + 1

    def store_error(self, part: str) -> None:
        self.store_errors[part] = self.store_errors.get(part, 0) + 1

    def render(self, budgets: list[BudgetLevel], ledger_pending: int,
               upstreams: list[UpstreamLevel]) -> bytes:
        self._scrape = (budgets, ledger_pending, upstreams)
        return generate_latest(self.registry)

    def log_to(self, stream: BinaryIO | None = None) -> None:
        """One JSON object per request per line (stderr by default)."""
        self._log = stream if stream is not None else sys.stderr.buffer

    def start(self) -> None:
        if self._log is not None and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_every_second())

    async def close(self) -> None:
        flusher, self._flusher = self._flusher, None
        await tasks.stop(flusher)
        self._flush()

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)  # a timer, not a wait for an event
            self._flush()

    def _flush(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log.flush()


class _Families(Collector):
    """The Prometheus view of an Observer's counts, built at scrape time."""

    def __init__(self, o: Observer) -> None:
        self.o = o

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        o = self.o
        yield _counter("tollway_requests", "Requests by outcome",
                       ["model", "provider", "status", "outcome"], o.requests.items())
        yield _counter("tollway_tokens", "Tokens billed", ["model", "provider", "kind"],
                       (((*mp, kind), n) for mp, counts in o.tokens.items()
                        for kind, n in zip(("input", "output", "cached"), counts,
                                           strict=True)))
        yield _counter("tollway_cost_usd", "Dollars spent", ["model", "provider"],
                       o.cost.items())
        yield _histogram("tollway_request_seconds", "Time to the last byte",
                         ["model", "provider", "status"], o.latency.items())
        yield _histogram("tollway_time_to_first_token_seconds",
                         "Time to the upstream's first event (streams)",
                         ["model", "provider"], o.ttft.items())
        yield _counter("tollway_retries", "Upstream calls beyond a request's first, by the "
                       "deployment each went to", ["model", "provider"], o.retries.items())
        yield _counter("tollway_fallbacks", "Requests answered by another model than the "
                       "first tried", ["source", "model"], o.fallbacks.items())
        yield _counter("tollway_cache_requests", "Requests the response cache saw, by result",
                       ["model", "result"], o.cache.items())
        yield _counter("tollway_cache_saved_usd", "What the answers served from the cache "
                       "would have cost", ["model"], (((a,), v) for a, v in o.saved.items()))
        yield _counter("tollway_guard_actions", "What guards did, by guard and action (log, "
                       "redact, retried, refused...)", ["guard", "action"],
                       o.guard_actions.items())
        yield _counter("tollway_count_tokens_requests", "count_tokens calls (not billed), by "
                       "who counted: upstream or local",
                       ["model", "provider", "counted_by", "status"], o.token_counts.items())
        yield _counter("tollway_store_errors", "Store calls that failed, by part (the failure "
                       "policy decided what happened)", ["part"],
                       (((p,), n) for p, n in o.store_errors.items()))
        budgets, pending, ups = o._scrape
        state = GaugeMetricFamily("tollway_breaker_state",
                                  "Circuit breaker: 0 closed, 1 half-open, 2 open",
                                  labels=["alias", "provider", "model"])
        depth = GaugeMetricFamily("tollway_upstream_queue_depth",
                                  "Requests waiting for outbound pacing",
                                  labels=["alias", "provider", "model"])
        busy = GaugeMetricFamily("tollway_upstream_in_flight", "Calls in flight",
                                 labels=["alias", "provider", "model"])
        for u in ups:
            where = [u.alias, u.provider, u.model]
            state.add_metric(where, BREAKER_VALUE[u.breaker])
            depth.add_metric(where, u.queued)
            busy.add_metric(where, u.in_flight)
        yield state
        yield depth
        yield busy
        left = GaugeMetricFamily("tollway_budget_remaining",
                                 "What is left of each budget (USD or tokens)",
                                 labels=["scope", "name", "metric", "period"])
        for scope, name, metric, period, remaining in budgets:
            left.add_metric([scope, name, metric, period], remaining)
        yield left
        yield GaugeMetricFamily("tollway_ledger_pending_rows",
                                "Ledger rows waiting to be written", value=pending)


def _counter(name: str, doc: str, labels: list[str],
             series: Iterable[tuple[Sequence[str], float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, n in series:
        family.add_metric(list(values), n)
    return family


def _histogram(name: str, doc: str, labels: list[str],
               series: Iterable[tuple[tuple[str, ...], _Hist]]) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=labels)
    for key, h in series:
        fam.add_metric(list(key), h.buckets(), sum_value=h.total)
    return fam
