"""What every finished request tells the operator: Prometheus metrics and one JSON
log line, both made from its ledger row.

Label children are cached per label tuple: prometheus_client's `.labels()` lookup
costs more than the increment itself.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tollway.accounting.ledger import LedgerRow

access_log = logging.getLogger("tollway.access")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_encode = msgspec.json.Encoder().encode


def enable_access_log(stream: object = None) -> None:
    """One JSON object per line on stderr, whatever the root log level."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


@dataclass(frozen=True, slots=True)
class _Series:
    """The labelled children one kind of request updates."""

    requests: Counter
    input_tokens: Counter
    output_tokens: Counter
    cached_tokens: Counter
    cost: Counter
    latency: Histogram
    ttft: Histogram


class Observer:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("tollway_requests", "Requests by outcome",
                                ["model", "provider", "status", "outcome"], registry=r)
        self.tokens = Counter("tollway_tokens", "Tokens billed",
                              ["model", "provider", "kind"], registry=r)
        self.cost = Counter("tollway_cost_usd", "Dollars spent", ["model", "provider"],
                            registry=r)
        self.latency = Histogram("tollway_request_seconds", "Time to the last byte",
                                 ["model", "provider", "status"], buckets=_LATENCY_BUCKETS,
                                 registry=r)
        self.ttft = Histogram("tollway_time_to_first_token_seconds",
                              "Time to the upstream's first bytes", ["model", "provider"],
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.budget_remaining = Gauge("tollway_budget_remaining",
                                      "What is left of each budget (USD or tokens)",
                                      ["scope", "name", "metric", "period"], registry=r)
        self.ledger_pending = Gauge("tollway_ledger_pending_rows",
                                    "Ledger rows waiting to be written", registry=r)
        self._series: dict[tuple[str, str, str, str], _Series] = {}

    def request(self, row: LedgerRow) -> None:
        model, provider = row.model or row.model_asked or "-", row.provider or "-"
        key = (model, provider, str(row.status), row.outcome)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = self._new_series(*key)
        s.requests.inc()
        if row.input_tokens:
            s.input_tokens.inc(row.input_tokens)
        if row.output_tokens:
            s.output_tokens.inc(row.output_tokens)
        if row.cached_tokens:
            s.cached_tokens.inc(row.cached_tokens)
        if row.cost_usd:
            s.cost.inc(row.cost_usd)
        s.latency.observe(row.latency_ms / 1000)
        if row.ttft_ms is not None:
            s.ttft.observe(row.ttft_ms / 1000)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(_encode(row).decode())

    def _new_series(self, model: str, provider: str, status: str, outcome: str) -> _Series:
        return _Series(self.requests.labels(model, provider, status, outcome),
                       self.tokens.labels(model, provider, "input"),
                       self.tokens.labels(model, provider, "output"),
                       self.tokens.labels(model, provider, "cached"),
                       self.cost.labels(model, provider),
                       self.latency.labels(model, provider, status),
                       self.ttft.labels(model, provider))

    def render(self, budgets: Iterable[tuple[str, str, str, str, float]],
               ledger_pending: int) -> bytes:
        """The exposition text; `budgets` are (scope, name, metric, period, remaining)."""
        self.budget_remaining.clear()
        for scope, name, metric, period, left in budgets:
            self.budget_remaining.labels(scope, name, metric, period).set(left)
        self.ledger_pending.set(ledger_pending)
        return generate_latest(self.registry)
