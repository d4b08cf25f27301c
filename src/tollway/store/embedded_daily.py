"""The embedded store's daily totals (store/daily.py), kept as rows are filed: each
filing's rows added to `dash_totals`, `dash_groups` and `dash_bins` in the filing's
transaction, so the totals always hold exactly the filed rows."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from tollway.accounting.rows import CACHE_HITS, CACHE_LOOKUPS, LedgerRow
from tollway.store.daily import DAY, DIMS, EVERYONE, LATENCY, TTFT, add_rows, bin_sql

_ADD_TOTALS = """INSERT INTO dash_totals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key, day) DO UPDATE SET requests = requests + excluded.requests,
    errors = errors + excluded.errors, cache_hits = cache_hits + excluded.cache_hits,
    cache_lookups = cache_lookups + excluded.cache_lookups,
    saved_usd = saved_usd + excluded.saved_usd, cost_usd = cost_usd + excluded.cost_usd,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens"""
_ADD_GROUPS = """INSERT INTO dash_groups VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (key, dim, day, name) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd,
    requests = requests + excluded.requests"""
_ADD_BINS = """INSERT INTO dash_bins VALUES (?, ?, ?, ?, ?)
ON CONFLICT (key, metric, day, bin) DO UPDATE SET rows = rows + excluded.rows"""


def add_days(c: sqlite3.Connection, rows: Sequence[LedgerRow]) -> None:
    """Add newly filed rows to the daily totals (inside the filing's transaction)."""
    if not rows:
        return
    added = add_rows(rows)
    c.executemany(_ADD_TOTALS, [
        (key, day, t.requests, t.errors, t.cache_hits, t.cache_lookups, t.saved_usd,
         t.cost_usd, t.input_tokens, t.output_tokens)
        for (key, day), t in added.totals.items()])
    c.executemany(_ADD_GROUPS, [(*k, cost, n) for k, (cost, n) in added.groups.items()])
    c.executemany(_ADD_BINS, [(*k, n) for k, n in added.bins.items()])


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


_DAY_OF = f"CAST(floor(ts / {DAY}) AS INTEGER)"
# The rows filed before the totals existed, each under its key and EVERYONE's.
_BOTH = f"(SELECT *, key AS k FROM ledger_rows UNION ALL SELECT *, '{EVERYONE}' FROM ledger_rows)"
_BACKFILL = [
    f"""INSERT INTO dash_totals SELECT k, {_DAY_OF}, count(*), sum(failed),
        count(CASE WHEN cache IN ({_in(CACHE_HITS)}) THEN 1 END),
        count(CASE WHEN cache IN ({_in(CACHE_LOOKUPS)}) THEN 1 END),
        total(saved_usd), total(cost_usd), sum(input_tokens), sum(output_tokens)
        FROM {_BOTH} GROUP BY 1, 2""",
    *(f"""INSERT INTO dash_groups SELECT k, '{dim}', {_DAY_OF}, {dim}, total(cost_usd),
          count(*) FROM {_BOTH} GROUP BY 1, 3, 4""" for dim in DIMS),
    *(f"""INSERT INTO dash_bins SELECT k, {metric}, {_DAY_OF}, {bin_sql(col, postgres=False)},
          count(*) FROM {_BOTH} WHERE {col} IS NOT NULL GROUP BY 1, 3, 4"""
      for metric, col in ((LATENCY, "latency_ms"), (TTFT, "ttft_ms")))]


def total_filed_rows(c: sqlite3.Connection) -> None:
    """Once per database: total the rows filed before the daily totals existed."""
    with c:
        c.execute("BEGIN")
        if c.execute("SELECT 1 FROM dash_ready").fetchone() is None:
            for sql in _BACKFILL:
                c.execute(sql)
            c.execute("INSERT INTO dash_ready VALUES (?)", (time.time(),))
