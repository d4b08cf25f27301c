"""The dashboard's reports on PostgreSQL: SQL over the ledger table, grouped by the same
label expressions as /admin/spend (postgres.GROUP_SQL), but for the model: the one that
answered, else the one asked (rows.served_model). Buckets are floor(ts / 3600)
(and / 86400) and date_trunc for months; percentiles are percentile_cont; the top lists
are one grouping-sets pass. A virtual key's rows, the tail's model filter and its errors
are read off the indexes of migration 0011. The whole days of a window are read from
the daily totals a trigger keeps (store/daily.py, migration 0012)."""

from __future__ import annotations

from typing import Any

from tollway.accounting.rows import CACHE_HITS, CACHE_LOOKUPS, FAILED_OUTCOMES, LedgerRow
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
# Dollars to the pico-dollar, for ranking (as Stats.top says): in float8, exact below
# $9,007 (2^53 pico-dollars) — a numeric round costs a ranking of 20,000 users 3x.
_PICO = "round({} * 1e12)"
_QUANTILES = f"ARRAY[{', '.join(map(str, PERCENTILES))}]::float8[]"
_TOTALS = f"""
SELECT count(*), count(*) FILTER (WHERE {_FAILED}),
       count(*) FILTER (WHERE cache IN ({_in(CACHE_HITS)})),
       count(*) FILTER (WHERE cache IN ({_in(CACHE_LOOKUPS)})),
       coalesce(sum(saved_usd), 0), coalesce(sum(cost_usd), 0),
       coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(output_tokens), 0)::bigint
FROM ledger WHERE {{where}}"""
_DAY_TOTALS = """
SELECT coalesce(sum(requests), 0)::bigint, coalesce(sum(errors), 0)::bigint,
       coalesce(sum(cache_hits), 0)::bigint, coalesce(sum(cache_lookups), 0)::bigint,
       coalesce(sum(saved_usd), 0), coalesce(sum(cost_usd), 0),
       coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(output_tokens), 0)::bigint
FROM dash_totals WHERE {days}"""
_ROW_QUANTILES = f"""
SELECT percentile_cont({_QUANTILES}) WITHIN GROUP (ORDER BY latency_ms),
       percentile_cont({_QUANTILES}) WITHIN GROUP (ORDER BY ttft_ms)
FROM ledger WHERE {{where}}"""
# Both metrics' bins in one pass over the rows (a row without a first token has none).
_ROW_BINS = f"""
SELECT b.metric, b.bin, 1 AS n FROM ledger, LATERAL (VALUES
    ({LATENCY}::smallint, {bin_sql("latency_ms", postgres=True)}),
    ({TTFT}::smallint, CASE WHEN ttft_ms IS NOT NULL THEN {bin_sql("ttft_ms", postgres=True)}
     END)) b(metric, bin)
WHERE {{where}} AND b.bin IS NOT NULL"""
# Each top list ranked as Stats.top orders them, over the rows of the edges and the
# daily groups of the whole days together.
_TOP = f"""
SELECT dim, name, c, n FROM (
    SELECT dim, name, c, n, row_number() OVER (
        PARTITION BY dim ORDER BY {_PICO.format("c")} DESC, n DESC, name COLLATE "C") AS r
    FROM (SELECT dim, name, sum(c) AS c, sum(n)::bigint AS n FROM ({{union}}) parts
          GROUP BY dim, name) grouped) ranked
WHERE r <= {TOP_N} ORDER BY dim, r"""
# The rows' part: one pass groups by each of TOP (a grouping set each: the others are
# NULL in its rows). (Columns quoted: `user` alone is the SQL function current_user.)
_SETS = ", ".join(f'("{dim}")' for dim in TOP)
_WHICH = " ".join(f"WHEN GROUPING(\"{dim}\") = 0 THEN '{dim}'" for dim in TOP)
_ROW_TOP = f"""
SELECT CASE {_WHICH} END AS dim, coalesce({", ".join(f'"{d}"' for d in TOP)}) AS name,
       sum(cost_usd) AS c, count(*) AS n
FROM (SELECT {", ".join(f'{_LABEL[dim]} AS "{dim}"' for dim in TOP)}, cost_usd
      FROM ledger WHERE {{where}}) x
GROUP BY GROUPING SETS ({_SETS})"""
_DAY_TOP = ("SELECT dim, name, cost_usd, requests FROM dash_groups WHERE {days} "
            f"AND dim IN ({_in(TOP)})")
_DAY_BUCKET = {
    "day": f"day::float8 * {DAY}",
    "month": f"extract(epoch FROM date_trunc('month', to_timestamp(day::float8 * {DAY}) "
             "AT TIME ZONE 'UTC'))",
}


class _Args(list[Any]):
    """Query parameters, each added where its placeholder is written."""

    def __call__(self, value: Any) -> str:
        self.append(value)
        return f"${len(self)}"


def _where(view: View, args: _Args) -> str:
    """The view's condition on `ledger` (a key by its label: the index's expression)."""
    where = f"ts >= {args(view.since)} AND ts < {args(view.until)}"
    return where if view.key is None else f"{_LABEL['key']} = {args(view.key)} AND {where}"


def _parts(view: View, days: Split, args: _Args, row_part: str, day_part: str) -> str:
    """UNION ALL of `row_part` over each of the split's edges ({where}: the edge's
    condition) and `day_part` over its whole days ({days}: theirs on a daily table)."""
    sql = [row_part.replace("{where}", _where(View(lo, hi, view.key), args))
           for lo, hi in days.edges]
    if days.days is not None:
        key = EVERYONE if view.key is None else view.key
        sql.append(day_part.replace("{days}", f"key = {args(key)} AND day >= "
                                    f"{args(days.days[0])} AND day < {args(days.days[1])}"))
    return " UNION ALL ".join(sql)


def _quantiles(values: list[float] | None) -> Quantiles:
    """percentile_cont's array (NULL over no rows)."""
    return Quantiles(*values) if values else Quantiles(None, None)


class PostgresDashboard:
    def __init__(self, store: Pooled) -> None:
        self._store = store

    async def spend(self, view: View, bucket: Bucket, stack: Stack,
                    named: int = NAMED) -> list[tuple[int, Spent]]:
        days, args = split(view, bucket), _Args()
        day_part = (
            f"SELECT {_DAY_BUCKET.get(bucket)} AS t, '{ALL}' AS g, cost_usd AS c, requests AS n "
            "FROM dash_totals WHERE {days}" if stack == "none" else
            f"SELECT {_DAY_BUCKET.get(bucket)} AS t, name AS g, cost_usd AS c, requests AS n "
            f"FROM dash_groups WHERE {{days}} AND dim = '{stack}'")
        union = _parts(view, days, args,
                       f"SELECT {_BUCKET[bucket]} AS t, {_STACK[stack]} AS g, "
                       "sum(cost_usd) AS c, count(*) AS n FROM ledger WHERE {where} GROUP BY 1, 2",
                       day_part)
        # Sorted as Python sorts strings (code points), not by the database's locale.
        found = await self._store.pool.fetch(f"""
            WITH parts AS MATERIALIZED ({union}),
            named AS (
                SELECT g FROM parts GROUP BY g ORDER BY {_PICO.format("sum(c)")} DESC,
                    sum(n) DESC, g COLLATE "C" LIMIT {args(named)})
            SELECT p.t, m.g COLLATE "C" AS g, sum(p.c), sum(p.n)::bigint
            FROM parts p LEFT JOIN named m ON m.g = p.g
            GROUP BY 1, 2 ORDER BY 1, 2 NULLS LAST""", *args)
        return [(int(t), Spent(g, c, n) if g is not None else Spent(OTHER, c, n, other=True))
                for t, g, c, n in found]

    async def stats(self, view: View) -> Stats:
        days = split(view)
        totals, tops, quantiles = _Args(), _Args(), _Args()
        totals_sql = _parts(view, days, totals, _TOTALS, _DAY_TOTALS)
        top_sql = _TOP.replace("{union}", _parts(view, days, tops, _ROW_TOP, _DAY_TOP))
        if days.days is None:  # the rows alone: exact percentiles
            quantiles_sql = _ROW_QUANTILES.replace("{where}", _where(view, quantiles))
        else:
            quantiles_sql = ("SELECT metric, bin, sum(n)::bigint FROM ("
                             + _parts(view, days, quantiles, _ROW_BINS,
                                      "SELECT metric, bin, rows FROM dash_bins WHERE {days}")
                             + ") parts GROUP BY 1, 2 ORDER BY 1, 2")
        async with self._store.pool.acquire() as conn, conn.transaction(
                isolation="repeatable_read", readonly=True):  # all from one snapshot
            parts = await conn.fetch(totals_sql, *totals)
            ranked = await conn.fetch(top_sql, *tops)
            found = await conn.fetch(quantiles_sql, *quantiles)
        (n, errors, hits, lookups, saved, cost, n_in, n_out) = (
            [sum(col) for col in zip(*parts, strict=True)])
        if days.days is None:
            latency, ttft = _quantiles(found[0][0]), _quantiles(found[0][1])
        else:
            latency = binned_quantiles([(b, k) for m, b, k in found if m == LATENCY])
            ttft = binned_quantiles([(b, k) for m, b, k in found if m == TTFT])
        top: dict[str, list[Spent]] = {dim: [] for dim in TOP}
        for dim, name, c, k in ranked:
            top[dim].append(Spent(name, c, k))
        return Stats(requests=n, errors=errors, cache_hits=hits, cache_lookups=lookups,
                     saved_usd=saved, cost_usd=cost, input_tokens=n_in, output_tokens=n_out,
                     latency_ms=latency, ttft_ms=ttft, top=top)

    async def tail(self, view: View, only: TailFilter) -> list[LedgerRow]:
        args = _Args()
        where = _where(view, args)
        before = only.before if only.before is not None else (view.until, "")
        where += f" AND (ts, id) < ({args(before[0])}, {args(before[1])})"
        if only.model is not None:
            where += f" AND {_LABEL['model']} = {args(only.model)}"
        if only.status is not None:
            where += f" AND {'' if only.status == 'error' else 'NOT '}{_FAILED}"
        found = await self._store.pool.fetch(
            f"SELECT {_COLS} FROM ledger WHERE {where} ORDER BY ts DESC, id DESC "
            f"LIMIT {args(only.limit)}", *args)
        return [LedgerRow(**r) for r in found]
