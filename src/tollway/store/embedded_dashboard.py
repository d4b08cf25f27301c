"""The dashboard's reports on the embedded store: SQL over the filed ledger index,
`ledger_rows` (embedded_ledger.py), whose columns hold the group labels. Buckets are
integer division of the time (strftime for months); percentiles are read off the
window's rows in order, from whichever end is nearer, and interpolated as
PostgreSQL's percentile_cont (store/dashboard.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from tollway.accounting.rows import CACHE_HITS, CACHE_LOOKUPS, LedgerRow
from tollway.store.dashboard import (
    ALL,
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
_STACK = {"model": "model", "key": "key", "team": "team", "feature": "feature",
          "user": "user", "none": f"'{ALL}'"}
_HITS = ", ".join(f"'{c}'" for c in CACHE_HITS)
_LOOKUPS = ", ".join(f"'{c}'" for c in CACHE_LOOKUPS)
_TOTALS = f"""SELECT count(*), coalesce(sum(failed), 0), coalesce(sum(cache IN ({_HITS})), 0),
    coalesce(sum(cache IN ({_LOOKUPS})), 0), total(saved_usd), total(cost_usd),
    coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), count(ttft_ms)
FROM ledger_rows WHERE """
# Each top list ordered as Stats.top says; one statement for the four.
_TOP = " UNION ALL ".join(
    f"SELECT * FROM (SELECT '{dim}', {dim}, total(cost_usd) AS c, count(*) AS n "
    f"FROM ledger_rows WHERE {{where}} GROUP BY {dim} "
    f"ORDER BY round(c, 12) DESC, n DESC, {dim} LIMIT {TOP_N})" for dim in TOP)


def _where(view: View) -> tuple[str, list[object]]:
    if view.key is None:
        return "ts >= ? AND ts < ?", [view.since, view.until]
    return "key = ? AND ts >= ? AND ts < ?", [view.key, view.since, view.until]


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


class EmbeddedDashboard:
    def __init__(self, ledger: SqliteLedger) -> None:
        self._ledger = ledger

    async def spend(self, view: View, bucket: Bucket, stack: Stack) -> list[tuple[int, Spent]]:
        where, args = _where(view)
        sql = (f"SELECT {_BUCKET[bucket]} AS t, {_STACK[stack]} AS g, total(cost_usd), "
               f"count(*) FROM ledger_rows WHERE {where} GROUP BY t, g ORDER BY t, g")
        found = await self._ledger.read(lambda c: c.execute(sql, args).fetchall())
        return [(t, Spent(g, cost, n)) for t, g, cost, n in found]

    async def stats(self, view: View) -> Stats:
        where, args = _where(view)

        def read(c: sqlite3.Connection) -> Stats:
            (n, errors, hits, lookups, saved, cost, n_in, n_out, n_ttft
             ) = c.execute(_TOTALS + where, args).fetchone()
            top: dict[str, list[Spent]] = {dim: [] for dim in TOP}
            for dim, name, c_usd, k in c.execute(_TOP.format(where=where), args * len(TOP)):
                top[dim].append(Spent(name, c_usd, k))
            return Stats(requests=n, errors=errors, cache_hits=hits, cache_lookups=lookups,
                         saved_usd=saved, cost_usd=cost, input_tokens=n_in,
                         output_tokens=n_out,
                         latency_ms=_quantiles(c, "latency_ms", where, args, n),
                         ttft_ms=_quantiles(c, "ttft_ms", where, args, n_ttft), top=top)
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
