"""The embedded store's daily totals (store/daily.py), kept as rows are filed: each
filing's rows added to `dash_totals`, `dash_groups` and `dash_bins` in the filing's
transaction, so the totals always hold exactly the filed rows (a ledger filed before
the totals existed is added the same way, once: embedded_ledger.total_filed_rows)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from tollway.accounting.rows import LedgerRow
from tollway.store.daily import add_rows

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
