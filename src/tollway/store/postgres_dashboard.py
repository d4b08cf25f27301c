"""The dashboard's reports on PostgreSQL: SQL over the ledger table, grouped by the same
label expressions as /admin/spend (postgres.GROUP_SQL), but for the model: the one that
answered, else the one asked (rows.served_model). Buckets are floor(ts / 3600)
(and / 86400) and date_trunc for months; percentiles are percentile_cont; the top lists
are one grouping-sets pass. A virtual key's rows, the tail's model filter and its errors
are read off the indexes of migration 0011."""

from __future__ import annotations

from typing import Any

from tollway.accounting.rows import CACHE_HITS, CACHE_LOOKUPS, FAILED_OUTCOMES, LedgerRow
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
)
from tollway.store.postgres import GROUP_SQL, LEDGER_COLUMNS, SERVED_MODEL_SQL
from tollway.store.postgres_conversations import Pooled

_BUCKET = {
    "hour": "floor(ts / 3600) * 3600",
    "day": "floor(ts / 86400) * 86400",
    "month": "extract(epoch FROM date_trunc('month', to_timestamp(floor(ts)) "
             "AT TIME ZONE 'UTC'))",
}
_LABEL = {"model": SERVED_MODEL_SQL,
          **{g: GROUP_SQL[g][0] for g in ("key", "team", "feature", "user")}}
_STACK = {**_LABEL, "none": f"'{ALL}'"}
_COLS = ", ".join(f'"{name}"' for name in LEDGER_COLUMNS)


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


_FAILED = f"outcome IN ({_in(FAILED_OUTCOMES)})"
_QUANTILES = f"ARRAY[{', '.join(map(str, PERCENTILES))}]::float8[]"
_TOTALS = f"""
SELECT count(*), count(*) FILTER (WHERE {_FAILED}),
       count(*) FILTER (WHERE cache IN ({_in(CACHE_HITS)})),
       count(*) FILTER (WHERE cache IN ({_in(CACHE_LOOKUPS)})),
       coalesce(sum(saved_usd), 0), coalesce(sum(cost_usd), 0),
       coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(output_tokens), 0)::bigint,
       percentile_cont({_QUANTILES}) WITHIN GROUP (ORDER BY latency_ms),
       percentile_cont({_QUANTILES}) WITHIN GROUP (ORDER BY ttft_ms)
FROM ledger WHERE {{where}}"""
# One pass groups by each of TOP (a grouping set each: the others are NULL in its rows),
# then each list keeps its TOP_N as Stats.top orders them.
# (Columns quoted: `user` alone is the SQL function current_user.)
_SETS = ", ".join(f'("{dim}")' for dim in TOP)
_WHICH = " ".join(f"WHEN GROUPING(\"{dim}\") = 0 THEN '{dim}'" for dim in TOP)
_TOP = f"""
SELECT dim, name, c, n FROM (
    SELECT dim, name, c, n, row_number() OVER (
        PARTITION BY dim ORDER BY round(c::numeric, 12) DESC, n DESC, name COLLATE "C") AS r
    FROM (SELECT CASE {_WHICH} END AS dim, coalesce({", ".join(f'"{d}"' for d in TOP)}) AS name,
                 sum(cost_usd) AS c, count(*) AS n
          FROM (SELECT {", ".join(f'{_LABEL[dim]} AS "{dim}"' for dim in TOP)}, cost_usd
                FROM ledger WHERE {{where}}) x
          GROUP BY GROUPING SETS ({_SETS})) grouped) ranked
WHERE r <= {TOP_N} ORDER BY dim, r"""


def _where(view: View) -> tuple[str, list[Any]]:
    """The view's condition on `ledger` (a key by its label: the index's expression)."""
    if view.key is None:
        return "ts >= $1 AND ts < $2", [view.since, view.until]
    return f"{_LABEL['key']} = $3 AND ts >= $1 AND ts < $2", [view.since, view.until, view.key]


def _quantiles(values: list[float] | None) -> Quantiles:
    """percentile_cont's array (NULL over no rows)."""
    return Quantiles(*values) if values else Quantiles(None, None)


class PostgresDashboard:
    def __init__(self, store: Pooled) -> None:
        self._store = store

    async def spend(self, view: View, bucket: Bucket, stack: Stack) -> list[tuple[int, Spent]]:
        where, args = _where(view)
        # Sorted as Python sorts strings (code points), not by the database's locale.
        found = await self._store.pool.fetch(f"""
            SELECT t, g COLLATE "C" AS g, c, n FROM (
                SELECT {_BUCKET[bucket]} AS t, {_STACK[stack]} AS g, sum(cost_usd) AS c,
                       count(*) AS n
                FROM ledger WHERE {where} GROUP BY 1, 2) spent
            ORDER BY t, g""", *args)
        return [(int(r[0]), Spent(r[1], r[2], r[3])) for r in found]

    async def stats(self, view: View) -> Stats:
        where, args = _where(view)
        async with self._store.pool.acquire() as conn, conn.transaction(
                isolation="repeatable_read", readonly=True):  # both from one snapshot
            (n, errors, hits, lookups, saved, cost, n_in, n_out, latency, ttft
             ) = await conn.fetchrow(_TOTALS.format(where=where), *args)
            ranked = await conn.fetch(_TOP.format(where=where), *args)
        top: dict[str, list[Spent]] = {dim: [] for dim in TOP}
        for dim, name, c, k in ranked:
            top[dim].append(Spent(name, c, k))
        return Stats(requests=n, errors=errors, cache_hits=hits, cache_lookups=lookups,
                     saved_usd=saved, cost_usd=cost, input_tokens=n_in, output_tokens=n_out,
                     latency_ms=_quantiles(latency), ttft_ms=_quantiles(ttft), top=top)

    async def tail(self, view: View, only: TailFilter) -> list[LedgerRow]:
        where, args = _where(view)
        before = only.before if only.before is not None else (view.until, "")
        args += before
        where += f" AND (ts, id) < (${len(args) - 1}, ${len(args)})"
        if only.model is not None:
            args.append(only.model)
            where += f" AND {_LABEL['model']} = ${len(args)}"
        if only.status is not None:
            where += f" AND {'' if only.status == 'error' else 'NOT '}{_FAILED}"
        args.append(only.limit)
        found = await self._store.pool.fetch(
            f"SELECT {_COLS} FROM ledger WHERE {where} ORDER BY ts DESC, id DESC "
            f"LIMIT ${len(args)}", *args)
        return [LedgerRow(**r) for r in found]
