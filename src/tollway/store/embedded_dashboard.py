"""The dashboard's reports on the embedded store: SQL over the filed ledger index,
`ledger_rows` (embedded_ledger.py), whose columns hold the group labels, and over the
daily totals for the whole days of a window (store/daily.py, embedded_daily.py).
Buckets are integer division of the time (strftime for months); percentiles of a
window read from rows alone are read off its rows in order, from whichever end is
nearer, and interpolated as PostgreSQL's percentile_cont (store/dashboard.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from tollway.accounting.rows import CACHE_HITS, CACHE_LOOKUPS, LedgerRow
from tollway.store.daily import (
    DAY,
    EVERYONE,
    LATENCY,
    TTFT,
    Split,
    bin_sql,
    binned_quantiles,
    split,
)
from tollway.store.dashboard import (
    ALL,
    NAMED,
    OTHER,
    PERCENTILES,
    TOP,
    TOP_N,
    Bucket,
    Quantiles,
    Spent,
    Stack,
    Stats,
    TailFilter,
    View,
    interpolate,
    percentile_rank,
)
from tollway.store.embedded_ledger import SqliteLedger, rows_at

_BUCKET = {
    "hour": "CAST(floor(ts / 3600) AS INTEGER) * 3600",
    "day": "CAST(floor(ts / 86400) AS INTEGER) * 86400",
    "month": "CAST(strftime('%s', CAST(floor(ts) AS INTEGER), 'unixepoch', 'start of month') "
             "AS INTEGER)",
}
_DAY_BUCKET = {  # of a daily total's day
    "day": f"day * {DAY}",
    "month": f"CAST(strftime('%s', day * {DAY}, 'unixepoch', 'start of month') AS INTEGER)",
}
_STACK = {"model": "model", "key": "key", "team": "team", "feature": "feature",
          "user": "user", "none": f"'{ALL}'"}
_HITS = ", ".join(f"'{c}'" for c in CACHE_HITS)
_LOOKUPS = ", ".join(f"'{c}'" for c in CACHE_LOOKUPS)
_ROW_TOTALS = f"""SELECT count(*), coalesce(sum(failed), 0), coalesce(sum(cache IN ({_HITS})), 0),
    coalesce(sum(cache IN ({_LOOKUPS})), 0), total(saved_usd), total(cost_usd),
    coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0) FROM ledger_rows WHERE """
_DAY_TOTALS = """SELECT coalesce(sum(requests), 0), coalesce(sum(errors), 0),
    coalesce(sum(cache_hits), 0), coalesce(sum(cache_lookups), 0), total(saved_usd),
    total(cost_usd), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0)
FROM dash_totals WHERE key = ? AND day >= ? AND day < ?"""
_ROW_BINS = " UNION ALL ".join(
    f"SELECT {metric} AS metric, {bin_sql(col, postgres=False)} AS bin, 1 AS rows "
    f"FROM ledger_rows WHERE {{where}} AND {col} IS NOT NULL"
    for metric, col in ((LATENCY, "latency_ms"), (TTFT, "ttft_ms")))


def _where(view: View) -> tuple[str, list[object]]:
    if view.key is None:
        return "ts >= ? AND ts < ?", [view.since, view.until]
    return "key = ? AND ts >= ? AND ts < ?", [view.key, view.since, view.until]


def _parts(view: View, days: Split, row_part: str, day_part: str) -> tuple[str, list[object]]:
    """UNION ALL of `row_part` over each of the split's edges (its {where} the edge's)
    and `day_part` over its whole days (its parameters: key, first and end day)."""
    sql, args = [], []
    for lo, hi in days.edges:
        where, a = _where(View(lo, hi, view.key))
        sql.append(row_part.format(where=where))
        args += a * row_part.count("{where}")
    if days.days is not None:
        sql.append(day_part)
        args += [EVERYONE if view.key is None else view.key, *days.days]
    return " UNION ALL ".join(sql), args


def _quantiles(c: sqlite3.Connection, column: str, where: str, args: Sequence[object],
               n: int) -> Quantiles:
    """p50 and p95 of `column` over the n rows where it is set: the values at the two
    ranks each lies between, read from the nearer end of the order."""
    out: list[float | None] = []
    for p in PERCENTILES:
        if n == 0:
            out.append(None)
            continue
        first, frac = percentile_rank(p, n)
        last = min(first + 1, n - 1)
        rising = first <= n - 1 - last
        found = [v for (v,) in c.execute(
            f"SELECT {column} FROM ledger_rows WHERE {where} AND {column} IS NOT NULL "
            f"ORDER BY {column} {'' if rising else 'DESC'} LIMIT ? OFFSET ?",
            (*args, last - first + 1, first if rising else n - 1 - last))]
        lo, hi = (found[0], found[-1]) if rising else (found[-1], found[0])
        out.append(interpolate(lo, hi, frac))
    return Quantiles(*out)


def _top(c: sqlite3.Connection, view: View, days: Split) -> dict[str, list[Spent]]:
    """Each top list, ordered as Stats.top says; one statement for the four."""
    parts, args = [], []
    for dim in TOP:
        union, a = _parts(
            view, days, f"SELECT {dim} AS name, cost_usd AS usd, 1 AS k FROM ledger_rows "
            "WHERE {where}",
            f"SELECT name, cost_usd, requests FROM dash_groups WHERE key = ? AND dim = '{dim}' "
            "AND day >= ? AND day < ?")
        parts.append(f"SELECT * FROM (SELECT '{dim}', name, total(usd) AS c, sum(k) AS n "
                     f"FROM ({union}) GROUP BY name "
                     f"ORDER BY round(c, 12) DESC, n DESC, name LIMIT {TOP_N})")
        args += a
    top: dict[str, list[Spent]] = {dim: [] for dim in TOP}
    for dim, name, cost, n in c.execute(" UNION ALL ".join(parts), args):
        top[dim].append(Spent(name, cost, n))
    for spent in top.values():  # (a union keeps no order)
        spent.sort(key=lambda s: (-round(s.cost_usd, 12), -s.requests, s.name))
    return top


def _binned(c: sqlite3.Connection, view: View, days: Split) -> tuple[Quantiles, Quantiles]:
    """Latency's and time to first token's quantiles off the bins of the whole days and
    of the edges' rows (store/daily.py)."""
    union, args = _parts(view, days, _ROW_BINS,
                         "SELECT metric, bin, rows FROM dash_bins WHERE key = ? "
                         "AND day >= ? AND day < ?")
    bins: dict[int, list[tuple[int, int]]] = {LATENCY: [], TTFT: []}
    for metric, b, n in c.execute(f"SELECT metric, bin, sum(rows) FROM ({union}) "
                                  "GROUP BY metric, bin ORDER BY metric, bin", args):
        bins[metric].append((b, n))
    return binned_quantiles(bins[LATENCY]), binned_quantiles(bins[TTFT])


class EmbeddedDashboard:
    def __init__(self, ledger: SqliteLedger) -> None:
        self._ledger = ledger

    async def spend(self, view: View, bucket: Bucket, stack: Stack,
                    named: int = NAMED) -> list[tuple[int, Spent]]:
        days = split(view, bucket)
        day_part = (
            f"SELECT {_DAY_BUCKET.get(bucket)} AS t, '{ALL}' AS g, cost_usd AS c, requests AS n "
            "FROM dash_totals WHERE key = ? AND day >= ? AND day < ?" if stack == "none" else
            f"SELECT {_DAY_BUCKET.get(bucket)} AS t, name AS g, cost_usd AS c, requests AS n "
            f"FROM dash_groups WHERE key = ? AND dim = '{stack}' AND day >= ? AND day < ?")
        union, args = _parts(view, days, f"SELECT {_BUCKET[bucket]} AS t, {_STACK[stack]} AS g, "
                             "cost_usd AS c, 1 AS n FROM ledger_rows WHERE {where}", day_part)
        sql = f"""WITH parts AS MATERIALIZED ({union}),
            named AS (SELECT g FROM parts GROUP BY g
                      ORDER BY round(total(c), 12) DESC, sum(n) DESC, g LIMIT ?)
            SELECT p.t, m.g, total(p.c), sum(p.n) FROM parts p LEFT JOIN named m ON m.g = p.g
            GROUP BY 1, 2 ORDER BY 1, 2 NULLS LAST"""
        found = await self._ledger.read(lambda c: c.execute(sql, (*args, named)).fetchall())
        return [(t, Spent(g, cost, n) if g is not None else Spent(OTHER, cost, n, other=True))
                for t, g, cost, n in found]

    async def stats(self, view: View) -> Stats:
        days = split(view)

        def read(c: sqlite3.Connection) -> Stats:
            union, args = _parts(view, days, _ROW_TOTALS + "{where}", _DAY_TOTALS)
            parts = c.execute(union, args).fetchall()
            (n, errors, hits, lookups, saved, cost, n_in, n_out) = (
                [sum(col) for col in zip(*parts, strict=True)])
            if days.days is None:  # the rows alone: exact percentiles
                where, args = _where(view)
                n_ttft = c.execute(f"SELECT count(ttft_ms) FROM ledger_rows WHERE {where}",
                                   args).fetchone()[0]
                latency = _quantiles(c, "latency_ms", where, args, n)
                ttft = _quantiles(c, "ttft_ms", where, args, n_ttft)
            else:
                latency, ttft = _binned(c, view, days)
            return Stats(requests=n, errors=errors, cache_hits=hits, cache_lookups=lookups,
                         saved_usd=saved, cost_usd=cost, input_tokens=n_in,
                         output_tokens=n_out, latency_ms=latency, ttft_ms=ttft,
                         top=_top(c, view, days))
        return await self._ledger.read(read)

    async def tail(self, view: View, only: TailFilter) -> list[LedgerRow]:
        where, args = _where(view)
        before = only.before if only.before is not None else (view.until, "")
        where += " AND (ts, id) < (?, ?)"
        args += before
        if only.model is not None:
            where += " AND model = ?"
            args.append(only.model)
        if only.status is not None:
            where += " AND failed = ?"
            args.append(only.status == "error")
        sql = (f"SELECT batch, pos FROM ledger_rows WHERE {where} "
               f"ORDER BY ts DESC, id DESC LIMIT ?")
        return await self._ledger.read(
            lambda c: rows_at(c, c.execute(sql, (*args, only.limit)).fetchall()))
