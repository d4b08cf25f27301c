"""The dashboard's daily totals: what each store keeps per UTC day as rows are written,
so a view over weeks reads a few thousand totals instead of every ledger row.

For each day and key lineage, and again for every key together (the key `EVERYONE`),
three tables hold:
- `dash_totals`: requests, errors, cache hits and lookups, dollars, dollars saved and
  tokens;
- `dash_groups`: dollars and requests per group of each dimension a chart stacks by
  or a top list ranks (`DIMS`);
- `dash_bins`: how many rows' latency (metric 0) and time to first token (metric 1)
  fell in each bin of a log scale 2 % wide, from which percentiles are read.

A view's window splits into the whole days inside it, read from the totals, and the
partial days at its ends, read from the rows (`split`). Sums and counts so read equal
the rows' exactly; a percentile over a window holding a whole day is read off the bins
and lies within 1 % of the rows' (each bin stands for its geometric middle). A window
with no whole day inside is read from the rows alone, percentiles exact.

PostgreSQL keeps the totals with a trigger on the ledger (migration 0012); the embedded
store as it files its rows (embedded_ledger.py), through `add_rows` here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tollway.accounting.rows import (
    CACHE_HITS,
    CACHE_LOOKUPS,
    FAILED_OUTCOMES,
    GROUP_OF,
    LedgerRow,
    served_model,
)
from tollway.store.dashboard import (
    PERCENTILES,
    Bucket,
    Quantiles,
    View,
    interpolate,
    percentile_rank,
)

DAY = 86400
EVERYONE = ""  # the key of every key's totals together (no lineage's label is empty)
DIMS = ("model", "key", "team", "feature", "user")
LATENCY, TTFT = 0, 1  # dash_bins.metric
BIN_WIDTH = 1.02
LOW_BIN = -1_000_000  # zero, negative or not a finite number
_LOG_WIDTH = math.log(BIN_WIDTH)


def bin_of(v: float) -> int:
    """The bin of a positive value: floor(ln v / ln 1.02), as the SQL computes it."""
    return math.floor(math.log(v) / _LOG_WIDTH) if 0 < v < math.inf else LOW_BIN


def bin_sql(column: str, *, postgres: bool) -> str:
    as_int = "::int" if postgres else ""
    upper = " AND {c} < 'Infinity'" if postgres else " AND {c} < 9e999"
    floor = f"floor(ln({column}) / ln({BIN_WIDTH}{'::float8' if postgres else ''}))"
    return (f"CASE WHEN {column} > 0{upper.format(c=column)} THEN "
            f"{f'{floor}{as_int}' if postgres else f'CAST({floor} AS INTEGER)'} "
            f"ELSE {LOW_BIN} END")


def bin_value(b: int) -> float:
    """What a bin stands for: its geometric middle (within 1 % of all it holds)."""
    return 0.0 if b == LOW_BIN else BIN_WIDTH ** (b + 0.5)


def binned_quantiles(counts: Sequence[tuple[int, int]]) -> Quantiles:
    """p50 and p95 of a histogram, (bin, rows) ascending by bin: percentile_cont over
    the values the bins stand for."""
    n = sum(k for _, k in counts)
    if n == 0:
        return Quantiles(None, None)

    def at(rank: int) -> float:
        seen = 0
        for b, k in counts:
            seen += k
            if rank < seen:
                return bin_value(b)
        raise AssertionError(rank)

    out = []
    for p in PERCENTILES:
        first, frac = percentile_rank(p, n)
        out.append(interpolate(at(first), at(min(first + 1, n - 1)), frac))
    return Quantiles(*out)


@dataclass(frozen=True, slots=True)
class Split:
    """A window as whole days [first, end) (day numbers; None: none) read from the
    totals, and the time ranges at its ends read from the rows."""

    days: tuple[int, int] | None
    edges: tuple[tuple[float, float], ...]


def split(view: View, bucket: Bucket | None = None) -> Split:
    """Hourly series and windows without a whole day are read from the rows alone."""
    first, end = math.ceil(view.since / DAY), math.floor(view.until / DAY)
    if bucket == "hour" or first >= end:
        return Split(None, ((view.since, view.until),))
    edges = tuple((lo, hi) for lo, hi in ((view.since, first * DAY), (end * DAY, view.until))
                  if lo < hi)
    return Split((first, end), edges)


@dataclass(slots=True)
class DayTotals:
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_lookups: int = 0
    saved_usd: float = 0.0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(slots=True)
class Added:
    """Rows' contributions to the three tables, keyed as their primary keys."""

    totals: dict[tuple[str, int], DayTotals]
    groups: dict[tuple[str, str, int, str], list[float]]  # -> [dollars, requests]
    bins: dict[tuple[str, int, int, int], int]


_FAILED, _HITS, _LOOKUPS = frozenset(FAILED_OUTCOMES), frozenset(CACHE_HITS), frozenset(
    CACHE_LOOKUPS)


def add_rows(rows: Iterable[LedgerRow]) -> Added:
    """What these rows add to the daily totals (the embedded store's filing)."""
    # (model: the dashboard's label, the one that answered, else the one asked)
    labels = [(dim, served_model if dim == "model" else GROUP_OF[dim]) for dim in DIMS]
    totals: dict[tuple[str, int], DayTotals] = defaultdict(DayTotals)
    groups: dict[tuple[str, str, int, str], list[float]] = defaultdict(lambda: [0.0, 0])
    bins: dict[tuple[str, int, int, int], int] = defaultdict(int)
    for r in rows:
        day = math.floor(r.ts / DAY)
        named = [(dim, label(r)) for dim, label in labels]
        lat, ttft = bin_of(r.latency_ms), None if r.ttft_ms is None else bin_of(r.ttft_ms)
        for key in (GROUP_OF["key"](r), EVERYONE):
            t = totals[(key, day)]
            t.requests += 1
            t.errors += r.outcome in _FAILED
            t.cache_hits += r.cache in _HITS
            t.cache_lookups += r.cache in _LOOKUPS
            t.saved_usd += r.saved_usd
            t.cost_usd += r.cost_usd
            t.input_tokens += r.input_tokens
            t.output_tokens += r.output_tokens
            for dim, name in named:
                g = groups[(key, dim, day, name)]
                g[0] += r.cost_usd
                g[1] += 1
            bins[(key, LATENCY, day, lat)] += 1
            if ttft is not None:
                bins[(key, TTFT, day, ttft)] += 1
    return Added(totals, groups, bins)
