"""What the dashboard asks of the ledger (/admin/dashboard/*), and the definitions both
stores' SQL and the callers share: what a bucket is, how a percentile is read.

Every figure is computed in the store, over the rows of one `View`: a window of time
and, for a virtual key, its own lineage's rows. Groups are named by their labels
(`accounting/rows.GROUP_OF`: a missing model, user, team or feature is `(none)`, a
row without a key `(no key)`; the model is `rows.served_model`, the one that answered,
else the one asked), so the same name means the same rows everywhere.
"""

from __future__ import annotations

import calendar
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from tollway.accounting.rows import LedgerRow

Bucket = Literal["hour", "day", "month"]
BUCKETS: tuple[Bucket, ...] = ("hour", "day", "month")
Stack = Literal["model", "key", "team", "feature", "user", "none"]
STACKS: tuple[Stack, ...] = ("model", "key", "team", "feature", "user", "none")
ALL = "all"  # the one group of stack=none
TOP: tuple[str, ...] = ("key", "user", "feature", "model")  # the stats' top lists
TOP_N = 5
PERCENTILES = (0.5, 0.95)
Status = Literal["ok", "error"]  # error: rows.FAILED_OUTCOMES


@dataclass(frozen=True, slots=True)
class View:
    """The rows one call reads: ts in [since, until), and only the key lineage `key`'s
    when given (a virtual key's own, or the one the master key asked for)."""

    since: float
    until: float
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Spent:
    """One group's spend: its name (label), dollars and requests; `other`: the groups
    past a spend series' named ones, together (named OTHER)."""

    name: str
    cost_usd: float
    requests: int
    other: bool = False


OTHER = "(other)"
NAMED = 10  # a spend series' groups named by default (the console's chart colours ten)


@dataclass(frozen=True, slots=True)
class Quantiles:
    """p50 and p95 (None: no rows had the value)."""

    p50: float | None
    p95: float | None


@dataclass(frozen=True, slots=True)
class Stats:
    requests: int
    errors: int  # rows.FAILED_OUTCOMES
    cache_hits: int  # rows.CACHE_HITS
    cache_lookups: int  # rows.CACHE_LOOKUPS
    saved_usd: float
    cost_usd: float
    input_tokens: int
    output_tokens: int
    latency_ms: Quantiles  # of every row
    ttft_ms: Quantiles  # of the rows that have one
    # For each of TOP, its TOP_N groups: by dollars (rounded to the pico-dollar, so
    # float-sum noise cannot reorder a tie), then requests, descending, then by name.
    top: dict[str, list[Spent]]


@dataclass(frozen=True, slots=True)
class TailFilter:
    """Which rows the live tail shows, newest first: those before the (ts, id) cursor,
    of this model (its label) and status, at most `limit`."""

    limit: int
    before: tuple[float, str] | None = None
    model: str | None = None
    status: Status | None = None


class DashboardStore(Protocol):
    async def spend(self, view: View, bucket: Bucket, stack: Stack,
                    named: int = NAMED) -> list[tuple[int, Spent]]:
        """Each (bucket start, group)'s spend, ordered by bucket then name; stack=none
        has one group, ALL. The `named` groups with the most dollars over the window
        (then requests, then name, as the top lists) keep their names; the rest of
        each bucket is one Spent with other=True, last in it."""
        ...

    async def stats(self, view: View) -> Stats: ...

    async def tail(self, view: View, only: TailFilter) -> list[LedgerRow]:
        """The newest rows first, ordered by (ts, id) descending."""
        ...


def bucket_start(t: float, bucket: Bucket) -> int:
    """The UTC hour, day or month `t` falls in (floor(t / 3600) * 3600, as the SQL)."""
    if bucket == "hour":
        return math.floor(t / 3600) * 3600
    if bucket == "day":
        return math.floor(t / 86400) * 86400
    g = time.gmtime(math.floor(t))
    return calendar.timegm((g.tm_year, g.tm_mon, 1, 0, 0, 0))


def next_bucket(start: int, bucket: Bucket) -> int:
    if bucket != "month":
        return start + (3600 if bucket == "hour" else 86400)
    g = time.gmtime(start)
    year, month = (g.tm_year + 1, 1) if g.tm_mon == 12 else (g.tm_year, g.tm_mon + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0))


def bucket_count(since: float, until: float, bucket: Bucket) -> int:
    """How many buckets [since, until) touches (months counted at 28 days: at least)."""
    width = {"hour": 3600, "day": 86400, "month": 28 * 86400}[bucket]
    return math.floor(until / width) - math.floor(since / width) + 1


def percentile_rank(p: float, n: int) -> tuple[int, float]:
    """PostgreSQL's percentile_cont over n sorted values: the (0-based) rank the p-th
    percentile lies at or after, and how far towards the next value."""
    pos = p * (n - 1)
    first = math.floor(pos)
    return first, pos - first


def interpolate(lo: float, hi: float, frac: float) -> float:
    """percentile_cont's interpolation between the values at two adjacent ranks."""
    return lo if frac == 0 else lo + frac * (hi - lo)

