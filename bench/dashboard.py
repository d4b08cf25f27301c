"""The dashboard API on a large ledger (issue 21): each /admin/dashboard/* endpoint's
latency with 1,000,000 ledger rows, on PostgreSQL (the shared store) and on the
embedded store, through a running gateway (`tollway serve` against that store).

Each store is filled with the same rows, written as the gateway writes them but in
bulk: PostgreSQL by COPY into a database migrated by `tollway migrate` (then VACUUM
ANALYZE, as autovacuum would leave it), the embedded store by its own ledger append
(a batch of 5,000 rows per insert, as the ledger writer's flushes) and then its filing
(store/embedded_ledger.py: what the first read after that many unread rows pays; timed
apart). The rows are a month of a busy gateway: 30 days, more by day than by night
(UTC), 40 keys (the busiest with 30 % of the traffic: the virtual key measured) in 8
teams and 15 features, 20,000 end users, six models at their list prices (60 %
streamed, with a time to first token), about 2.4 % errors and refusals, 8 % cache hits,
and 300 fired alerts. Budgets: global, per team, per feature and on 10 keys.

Every endpoint is then called one request at a time (urllib, a new connection each, as
a console's fetch might), after two warm-up calls, by the master key (everyone's rows)
and by the busiest virtual key (its own), over the default window (the last 24 hours,
about 1/30 of the rows), the last 7 days and the whole month. The figure is the wall
time of the call, p50 and p95 over the repeats; the acceptance is p95 <= 300 ms.

    .venv/bin/python bench/dashboard.py            # 1,000,000 rows, ~5 min
    .venv/bin/python bench/dashboard.py --quick    # 50,000 rows -> bench/results/

Needs the machine's PostgreSQL and Redis: a throwaway database (dropped afterwards) and
a Redis database of its own (11 by default, flushed before and after).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import sqlite3
import statistics
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import numpy as np

import cli
import harness
import report
from harness import MASTER, Servers
from report import para, table
from tollway.accounting.rows import LedgerRow
from tollway.keys import KeyRecord, mint
from tollway.store.base import FiredAlert
from tollway.store.embedded import EmbeddedStore
from tollway.store.postgres import LEDGER_COLUMNS, PostgresStore
from tollway.store.postgres_alerts import PostgresAlerts
from workers import pg_admin, redis_flush, with_db

DAY = 86400.0
BATCH = 5000  # rows per append: the ledger writer's batch_rows
KEYS, TEAMS, FEATURES, USERS, ALERTS = 40, 8, 15, 20_000, 300
# (alias asked, upstream model, provider, share, $ per 1M input, per 1M output, median ms)
MODELS = [("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", 0.45, 0.15, 0.60, 900),
          ("gpt-4o", "gpt-4o-2024-08-06", "openai", 0.20, 2.50, 10.0, 1800),
          ("haiku", "claude-3-5-haiku-20241022", "anthropic", 0.15, 0.80, 4.00, 1200),
          ("sonnet", "claude-sonnet-4-20250514", "anthropic", 0.10, 3.00, 15.0, 2600),
          ("embed", "text-embedding-3-small", "openai", 0.08, 0.02, 0.0, 150),
          ("local", "smollm2-135m-instruct", "local", 0.02, 0.0, 0.0, 400)]
# (outcome, status, share): errors and refusals are what the dashboard counts as errors.
OUTCOMES = [("ok", 200, 0.955), ("error", 502, 0.010), ("error", 504, 0.005),
            ("refused", 429, 0.015), ("refused", 400, 0.005), ("aborted", 499, 0.007),
            ("cut", 200, 0.003)]
CACHE = [(None, 0.20), ("miss", 0.70), ("hit", 0.06), ("semantic-hit", 0.02), ("bypass", 0.02)]
TARGET_MS = 300.0


@dataclass
class Fill:
    """What the run wrote: the keys (the busiest first), and the figures it reports."""

    keys: list[tuple[str, KeyRecord]]
    now: float
    rows: int
    ts: np.ndarray = field(default_factory=lambda: np.empty(0))  # each row's time
    key: np.ndarray = field(default_factory=lambda: np.empty(0))  # each row's key (index)
    seconds: dict[str, float] = field(default_factory=dict)


def zipf(rng: np.random.Generator, n: int, size: int, s: float = 1.1) -> np.ndarray:
    """Indices in [0, n), index 0 the most frequent (weights 1 / (i + 1)^s)."""
    w = 1.0 / np.arange(1, n + 1) ** s
    return rng.choice(n, size=size, p=w / w.sum())


def pick(rng: np.random.Generator, shares: list[float], size: int) -> np.ndarray:
    p = np.array(shares)
    return rng.choice(len(p), size=size, p=p / p.sum())


def keys(now: float) -> list[tuple[str, KeyRecord]]:
    out = []
    for i in range(KEYS):
        budgets = [{"usd": 500.0 if i == 0 else 50.0, "period": "day"}] if i < 10 else []
        out.append(mint(now - 40 * DAY, name=f"app-{i}", team=f"team-{i % TEAMS}",
                        features=[f"feature-{i % FEATURES}"], budgets=budgets))
    return out


def times(rng: np.random.Generator, n: int, now: float, days: float) -> np.ndarray:
    """n sorted times in the `days` before `now`, twice as many at 14:00 UTC as at 02:00."""
    out = np.empty(0)
    while out.size < n:
        t = rng.uniform(now - days * DAY, now, 2 * n)
        hour = (t % DAY) / 3600
        keep = rng.random(t.size) < (1 + 0.33 * np.sin((hour - 8) / 24 * 2 * np.pi)) / 1.34
        out = np.concatenate([out, t[keep]])
    return np.sort(out[:n])


def ledger(fill: Fill, days: float, seed: int = 21) -> Iterator[list[LedgerRow]]:
    """The rows, in time order, a batch at a time."""
    rng = np.random.default_rng(seed)
    n = fill.rows
    key = zipf(rng, KEYS, n, 1.3)
    model = pick(rng, [m[3] for m in MODELS], n)
    outcome = pick(rng, [o[2] for o in OUTCOMES], n)
    cache = pick(rng, [c[1] for c in CACHE], n)
    user = zipf(rng, USERS, n)
    own_feature = rng.random(n) < 0.7
    other_feature = rng.integers(0, FEATURES, n)
    stream = rng.random(n) < 0.6
    n_in = np.maximum(1, rng.lognormal(6.5, 1.0, n)).astype(int)
    n_out = np.maximum(1, rng.lognormal(5.0, 0.9, n)).astype(int)
    slow = rng.lognormal(0.0, 0.5, n)
    first = rng.lognormal(-1.1, 0.6, n)
    ts = times(rng, n, fill.now, days)
    fill.ts, fill.key = ts, key
    recs = [rec for _, rec in fill.keys]
    for lo in range(0, n, BATCH):
        batch = []
        for i in range(lo, min(lo + BATCH, n)):
            rec = recs[key[i]]
            alias, upstream, provider, _, p_in, p_out, median = MODELS[model[i]]
            name, status, _ = OUTCOMES[outcome[i]]
            hit = CACHE[cache[i]][0]
            answered = name in ("ok", "cut", "aborted") or status == 502
            cost = (int(n_in[i]) * p_in + int(n_out[i]) * p_out) / 1e6 if answered else 0.0
            latency = (2.0 if hit in ("hit", "semantic-hit") else median * float(slow[i])
                       if answered else 5.0)
            batch.append(LedgerRow(
                id=f"row_bench_{i}", request_id=f"req_bench_{i}", ts=float(ts[i]),
                status=status, outcome=name, key_id=rec.id, key_lineage=rec.lineage,
                user=f"user-{int(user[i])}", team=rec.team,
                feature=rec.features[0] if own_feature[i] else f"feature-{other_feature[i]}",
                model_asked=alias, model=upstream if name != "refused" else None,
                provider=provider if name != "refused" else None,
                stream=bool(stream[i]), input_tokens=int(n_in[i]) if answered else 0,
                output_tokens=int(n_out[i]) if answered else 0,
                cost_usd=0.0 if hit in ("hit", "semantic-hit") else cost,
                saved_usd=cost if hit in ("hit", "semantic-hit") else 0.0,
                latency_ms=round(latency, 3),
                ttft_ms=(round(latency * min(float(first[i]), 0.9), 3)
                         if stream[i] and answered else None),
                error=None if name in ("ok", "cut") else name, cache=hit))
        yield batch


def alerts(now: float, recs: list[KeyRecord]) -> list[FiredAlert]:
    rng = np.random.default_rng(3)
    out = []
    for _ in range(ALERTS):
        rec = recs[int(rng.integers(0, 10))]
        at = now - float(rng.uniform(0, 30 * DAY))
        msg = f"The daily dollar budget of key '{rec.lineage}' is 80% used; threshold 80%."
        out.append(FiredAlert(at, "budget", "key", rec.lineage, msg, msgspec.json.encode(
            {"kind": "budget", "message": msg, "at": at, "threshold": 0.8})))
    return sorted(out, key=lambda a: a.at)


# -- filling the stores ------------------------------------------------------------------


async def fill_embedded(path: Path, fill: Fill, days: float) -> None:
    s = EmbeddedStore(str(path))
    try:
        t = time.perf_counter()
        for batch in ledger(fill, days):
            await s.ledger.append(batch)
        fill.seconds["embedded: append"] = time.perf_counter() - t
        t = time.perf_counter()
        await s.ledger.file()  # (the embedded ledger's own: store/embedded_ledger.py)
        fill.seconds["embedded: filing"] = time.perf_counter() - t
        for _, rec in fill.keys:
            await s.keys.put(rec)
        for a in alerts(fill.now, [rec for _, rec in fill.keys]):
            await s.alerts.record(a)
    finally:
        await s.close()


async def fill_postgres(url: str, fill: Fill, days: float) -> None:
    pg = PostgresStore(url)
    await pg.open()  # migrates
    try:
        t = time.perf_counter()
        async with pg.pool.acquire() as conn:
            for batch in ledger(fill, days):
                await conn.copy_records_to_table(
                    "ledger", columns=LEDGER_COLUMNS,
                    records=[msgspec.structs.astuple(r) for r in batch])
        fill.seconds["postgres: COPY"] = time.perf_counter() - t
        t = time.perf_counter()
        async with pg.pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE ledger")
        fill.seconds["postgres: VACUUM ANALYZE"] = time.perf_counter() - t
        for _, rec in fill.keys:
            await pg.keys.put(rec)
        for a in alerts(fill.now, [rec for _, rec in fill.keys]):
            await PostgresAlerts(pg).record(a)
    finally:
        await pg.close()


WRITE_BATCH, WRITE_ROUNDS = 500, 12


async def write_cost(url: str, fill: Fill) -> tuple[float, float]:
    """What keeping the daily totals costs PostgreSQL per ledger row: the gateway's
    append (a batch of 500 rows per statement, as the ledger writer flushes) with the
    trigger and without it, alternating, into a fresh database; medians of µs a row."""
    pg = PostgresStore(url)
    await pg.open()
    try:
        rows = [r for batch in ledger(fill, 1.0, seed=5) for r in batch]
        per: dict[bool, list[float]] = {True: [], False: []}
        i = 0
        for _ in range(WRITE_ROUNDS):
            for kept in (True, False):
                await pg.pool.execute(f"ALTER TABLE ledger {'ENABLE' if kept else 'DISABLE'} "
                                      "TRIGGER ledger_dash_days")
                t = time.perf_counter()
                for _ in range(4):
                    await pg.ledger.append(rows[i:i + WRITE_BATCH])
                    i += WRITE_BATCH
                per[kept].append((time.perf_counter() - t) / (4 * WRITE_BATCH) * 1e6)
        return statistics.median(per[True]), statistics.median(per[False])
    finally:
        await pg.close()


async def pg_facts(url: str) -> dict[str, str]:
    """The server's version and memory settings, and the ledger's size on disk."""
    conn = await asyncpg.connect(url)
    try:
        return {k: str(await conn.fetchval(sql)) for k, sql in [
            ("version", "SHOW server_version"), ("shared_buffers", "SHOW shared_buffers"),
            ("work_mem", "SHOW work_mem"),
            ("ledger", "SELECT pg_size_pretty(pg_total_relation_size('ledger'))")]}
    finally:
        await conn.close()


# -- measuring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    label: str
    path: str  # under /admin/dashboard/
    params: dict[str, str]
    window: float  # days the window covers
    virtual: bool = False  # as the busiest virtual key (else the master key)


def calls(now: float) -> list[Call]:
    def since(days: float) -> dict[str, str]:
        return {"since": repr(now - days * DAY)}

    return [
        Call("spend, hour x model", "spend", {"bucket": "hour", "stack": "model"}, 1),
        Call("spend, hour x user", "spend", {"bucket": "hour", "stack": "user"}, 1),
        Call("stats", "stats", {}, 1),
        Call("budgets", "budgets", {}, 1),
        Call("tail", "tail", {"limit": "50"}, 1),
        Call("tail, errors of gpt-4o", "tail",
             {"status": "error", "model": "gpt-4o-2024-08-06"}, 1),
        Call("alerts", "alerts", {}, 1),
        Call("spend, hour x model", "spend", {"bucket": "hour", "stack": "model"}, 1, True),
        Call("stats", "stats", {}, 1, True),
        Call("tail", "tail", {}, 1, True),
        Call("budgets", "budgets", {}, 1, True),
        Call("spend, day x model", "spend", {"bucket": "day", "stack": "model", **since(7)}, 7),
        Call("stats", "stats", since(7), 7),
        Call("spend, day x key", "spend", {"bucket": "day", "stack": "key", **since(30)}, 30),
        Call("spend, day x user", "spend", {"bucket": "day", "stack": "user", **since(30)}, 30),
        Call("stats", "stats", since(30), 30),
        Call("stats", "stats", since(30), 30, True),
        Call("tail, errors", "tail", {"status": "error", **since(30)}, 30),
    ]


def timed(url: str, secret: str) -> tuple[float, int]:
    """One GET: (milliseconds, response bytes); fails on anything but 200."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        body = r.read()
    return 1000 * (time.perf_counter() - t), len(body)


@dataclass
class Measured:
    call: Call
    rows: int  # in the window (and the key's, for the virtual key)
    ms: list[float]
    size: int


def measure(gw_url: str, fill: Fill, repeats: int) -> list[Measured]:
    secret = fill.keys[0][0]
    out = []
    for c in calls(fill.now):
        url = f"{gw_url}/admin/dashboard/{c.path}" + (
            "?" + urllib.parse.urlencode(c.params) if c.params else "")
        who = secret if c.virtual else MASTER
        in_window = fill.ts >= fill.now - c.window * DAY
        rows = int((in_window & (fill.key == 0)).sum() if c.virtual else in_window.sum())
        for _ in range(2):  # warm-up
            timed(url, who)
        n = repeats if c.window < 30 else max(3, repeats // 3)
        ms, size = [], 0
        for _ in range(n):
            t, size = timed(url, who)
            ms.append(t)
        out.append(Measured(c, rows, ms, size))
        cli.log(f"{'key' if c.virtual else 'master'} {c.window:>2g}d {c.label:24s} "
                f"p50 {statistics.median(ms):7.1f} ms  p95 {p95(ms):7.1f} ms  ({rows:,} rows)")
    return out


def p95(ms: list[float]) -> float:
    """The 95th percentile by nearest rank (of 20 repeats: the second slowest)."""
    s = sorted(ms)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def gateway_config(store: dict[str, Any]) -> dict[str, Any]:
    """A gateway whose one alias is never called (the run only reads the dashboard),
    with budgets on every scope the dashboard lists."""
    return {"models": {"gpt-4o-mini": {"deployments": [
                {"provider": "openai", "model": "gpt-4o-mini",
                 "api_base": "http://127.0.0.1:9/v1", "api_key": "unused"}]}},
            "store": store,
            "budgets": {"global": [{"usd": 2000, "period": "day"},
                                   {"usd": 40000, "period": "month"}],
                        "teams": {f"team-{i}": [{"usd": 400, "period": "day"}]
                                  for i in range(TEAMS)},
                        "features": {f"feature-{i}": [{"usd": 5000, "period": "month"}]
                                     for i in range(0, FEATURES, 3)}}}


def run_store(sv: Servers, name: str, store: dict[str, Any], fill: Fill,
              repeats: int) -> list[Measured]:
    gw = harness.start_gateway(sv, name, gateway_config(store), master=True)
    try:
        return measure(gw.url, fill, repeats)
    finally:
        sv.stop(gw)


# -- the report --------------------------------------------------------------------------


def results_table(got: dict[str, list[Measured]]) -> str:
    stores = list(got)
    rows = []
    for i, m in enumerate(got[stores[0]]):
        c = m.call
        cells = [f"{c.label} ({'virtual key' if c.virtual else 'master'})",
                 {1: "24 h", 7: "7 days", 30: "30 days"}[int(c.window)], f"{m.rows:,}"]
        for s in stores:
            ms = got[s][i].ms
            ok = "" if p95(ms) <= TARGET_MS else " **over**"
            cells.append(f"{statistics.median(ms):,.0f} / {p95(ms):,.0f}{ok}")
        rows.append(cells)
    return table(["endpoint (reader)", "window", "rows read",
                  *[f"{s}: p50 / p95 ms" for s in stores]], rows)


def headline(got: dict[str, list[Measured]], fill: Fill) -> str:
    calls_ = [m for ms in got.values() for m in ms]
    rows = next(m.rows for m in calls_ if m.call.window == 1)
    day = "; ".join(f"{store} {max(p95(m.ms) for m in ms if m.call.window == 1):,.0f} ms"
                    for store, ms in got.items())
    day_over = [m for m in calls_ if m.call.window == 1 and p95(m.ms) > TARGET_MS]
    over = [m for m in calls_ if p95(m.ms) > TARGET_MS]
    text = (f"with {fill.rows:,} ledger rows over 30 days, "
            + ("every endpoint answers" if not day_over else
               f"{len(day_over)} calls do not answer") +
            f" the default window (the last 24 hours, {rows:,} rows) within 300 ms at p95 "
            f"(the slowest: {day})")
    if not over:
        return text + "; so do the 7- and 30-day views."
    return text + (f". Wider views are not all within it: {len(over)} of {len(calls_)} "
                   f"calls are over, each reading {min(m.rows for m in over):,} rows or "
                   f"more (up to {max(p95(m.ms) for m in over):,.0f} ms).")


def per_10k(ms: list[Measured]) -> str:
    """The master's stats over the 24-hour default (read from its rows), in ms per
    10,000 rows."""
    each = [1e4 * statistics.median(m.ms) / m.rows for m in ms
            if m.call.path == "stats" and not m.call.virtual and m.call.window == 1
            and m.rows]
    return f"{min(each):,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000, help="(quick: 50,000)")
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=20, help="per call (quick: 5)")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/11",
                    help="a Redis database for this run alone: flushed before and after")
    ap.add_argument("--postgres-admin-url",
                    default="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="where to create (and drop) the run's database")
    args = ap.parse_args(argv)
    n, repeats = (50_000, 5) if args.quick else (args.rows, args.repeats)
    now = time.time()
    fill = Fill(keys(now), now, n)
    db = f"tollway_bench_dashboard_{secrets.token_hex(4)}"
    pg_url = with_db(args.postgres_admin_url, db)
    got: dict[str, list[Measured]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        work = Path(tmp)
        harness.COMMANDS.append(f"redis-cli -u {args.redis_url} FLUSHDB")
        redis_flush(args.redis_url)
        harness.COMMANDS.append(f"psql {args.postgres_admin_url} -c 'CREATE DATABASE {db}'")
        pg_admin(args.postgres_admin_url, f'CREATE DATABASE "{db}"')
        try:
            cli.log(f"filling PostgreSQL with {n:,} rows")
            harness.COMMANDS.append(f"# {n:,} rows: COPY into ledger (migrated as `tollway "
                                    "migrate` does), then VACUUM ANALYZE ledger")
            asyncio.run(fill_postgres(pg_url, fill, args.days))
            pg = asyncio.run(pg_facts(pg_url))
            cli.log("measuring the daily totals' cost per appended row")
            write_db = f"{db}_write"
            pg_admin(args.postgres_admin_url, f'CREATE DATABASE "{write_db}"')
            try:
                write = asyncio.run(write_cost(with_db(args.postgres_admin_url, write_db),
                                               Fill(fill.keys, now, 2 * WRITE_ROUNDS * 4
                                                    * WRITE_BATCH)))
            finally:
                pg_admin(args.postgres_admin_url,
                         f'DROP DATABASE IF EXISTS "{write_db}" WITH (FORCE)')
            cli.log(f"filling the embedded store with {n:,} rows")
            harness.COMMANDS.append(f"# {n:,} rows: appended to $W/embedded, {BATCH:,} a "
                                    "batch, then filed")
            asyncio.run(fill_embedded(work / "embedded", fill, args.days))
            db_mb = (work / "embedded" / "tollway.db").stat().st_size / 2**20
            with Servers(work) as sv:
                got["PostgreSQL"] = run_store(
                    sv, "gateway-postgres", {"redis_url": args.redis_url,
                                             "postgres_url": pg_url}, fill, repeats)
                got["embedded"] = run_store(sv, "gateway-embedded",
                                            {"path": str(work / "embedded")}, fill, repeats)
            problems = harness.log_problems(sv)
            commands = harness.commands({work: "$W"})
            config = (work / "gateway-postgres.yaml").read_text().replace(str(work), "$W")
        finally:
            harness.COMMANDS.append(f"psql {args.postgres_admin_url} -c 'DROP DATABASE {db} "
                                    "WITH (FORCE)'")
            pg_admin(args.postgres_admin_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            redis_flush(args.redis_url)
    filing = fill.seconds["embedded: filing"]
    body = "\n\n".join([
        "## Method", "\n\n".join((__doc__ or "").split("\n\n")[1:4]),
        "## Results", results_table(got),
        para(f"""*rows read*: the ledger rows in the call's window (for the virtual key:
            its own). p95 is the nearest rank over {repeats} calls ({max(3, repeats // 3)} for
            the 30-day ones); **over** marks a p95 above {TARGET_MS:.0f} ms."""),
        para(f"""A window's whole UTC days are read from the daily totals kept as rows
            are written (store/daily.py), its partial days at either end from the rows, so
            a 30-day view reads about a day of rows and a few thousand totals; the 24-hour
            default spans two partial days and is read from its rows alone (percentiles
            exact); stats there take {per_10k(got["PostgreSQL"])} ms per 10,000 rows on
            PostgreSQL and {per_10k(got["embedded"])} ms on the embedded store. The
            per-user views are the heaviest: a month holds a total for every user seen on
            each day (about 170,000 here). The tail, budgets and alerts read
            a page or a handful of counters whatever the window."""),
        para(f"""What the totals cost when written: PostgreSQL's trigger makes the
            gateway's ledger append {write[0]:,.0f} µs a row against {write[1]:,.0f} µs
            without it ({write[0] / write[1]:,.1f}x; batches of {WRITE_BATCH} rows,
            alternating, medians of {WRITE_ROUNDS}) — work done by the database, off the
            request path (the ledger writer flushes in the background)."""),
        "## Filling", table(["step", "seconds"],
                            [[k, f"{v:,.1f}"] for k, v in fill.seconds.items()]),
        para(f"""Filing the embedded store's {n:,} rows, with their daily totals, took
            {filing:,.1f} s ({1e6 * filing / n:,.1f} µs a row): what the first dashboard
            (or /admin/ledger) call pays after that many rows written and never read. A
            dashboard being watched files only the rows since its last call. The embedded
            database is {db_mb:,.0f} MiB; PostgreSQL's ledger with its indexes {pg["ledger"]}."""),
        "## Configuration and commands",
        para("Tracebacks and ERROR lines in each process's output over the run: " + ", ".join(
            f"{p} {tb} / {err}" for p, (tb, err) in problems.items()) + "."),
        "`$W/gateway-postgres.yaml` (the embedded gateway's differs in `store` only):\n\n"
        f"```yaml\n{config}```",
        para("Every command the run executed, in order (`TOLLWAY_MASTER_KEY` is a random "
             "secret; the fills and the calls ran in this process):"),
        f"```sh\n{commands}\n```"])
    report.write(args, title="Dashboard API on a 1,000,000-row ledger",
                 headline=headline(got, fill), body=body,
                 libraries=["asyncpg", "numpy"],
                 extra=[("PostgreSQL", f"{pg['version']} (shared_buffers {pg['shared_buffers']}, "
                                       f"work_mem {pg['work_mem']})"),
                        ("SQLite", sqlite3.sqlite_version)])
    report.save_raw({s: [{"call": vars(m.call), "rows": m.rows, "ms": m.ms, "bytes": m.size}
                         for m in ms] for s, ms in got.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
