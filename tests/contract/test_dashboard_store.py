"""The dashboard's reports, on every store: each figure equals the same figure computed
in Python from the rows (tests/helpers/dashboard.py) — per bucket and group, totals,
percentiles, top lists — over the whole ledger, a window inside it and one key's rows;
the tail pages newest first under its filters; fired alerts come back newest first."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from tests.helpers import dashboard as ref
from tollway.accounting.rows import LedgerRow
from tollway.store.base import FiredAlert, Store
from tollway.store.daily import split
from tollway.store.dashboard import (
    BUCKETS,
    STACKS,
    TOP,
    DashboardStore,
    Stats,
    TailFilter,
    View,
)
from tollway.store.embedded import EmbeddedStore
from tollway.store.postgres import PostgresStore
from tollway.store.postgres_dashboard import PostgresDashboard

if TYPE_CHECKING:
    from tests.contract.conftest import ScratchPostgres

T0 = 1_767_000_000.0  # 2025-12-29: the rows cross a month's and a year's end
SPAN = 50 * 86400.0


def ledger(n: int = 400) -> list[LedgerRow]:
    rnd = random.Random(7)
    rows = []
    for i in range(n):
        outcome = rnd.choice(["ok"] * 8 + ["error", "refused", "aborted", "cut"])
        rows.append(LedgerRow(
            id=f"row_{i:04d}", request_id=f"req{i}", ts=T0 + rnd.random() * SPAN,
            status={"ok": 200, "cut": 200, "error": 502, "refused": 429,
                    "aborted": 499}[outcome], outcome=outcome,
            key_lineage=rnd.choice(["key_a", "key_b", "key_c", "master", None]),
            user=rnd.choice(["ann", "bob", "cy", "dee", "eve", "fay", "", None]),
            team=rnd.choice(["red", "blue", None]),
            feature=rnd.choice(["search", "chat", "summary", "tags", "", None]),
            model_asked=rnd.choice(["fast", "smart", None]),
            model=rnd.choice(["gpt-4o-mini", "gpt-4o", "claude", "", None]),
            # Whole numbers of pico-dollars; ties in time, latency and cost on purpose.
            cost_usd=rnd.randrange(0, 5000) * 1e-7, saved_usd=rnd.choice([0.0, 0.001]),
            input_tokens=rnd.randrange(1, 900), output_tokens=rnd.randrange(0, 300),
            latency_ms=float(rnd.randrange(5, 60)) * 10,
            ttft_ms=rnd.choice([None, float(rnd.randrange(1, 40))]),
            cache=rnd.choice([None, "hit", "semantic-hit", "miss", "bypass"])))
    rows[1] = msgspec.structs.replace(rows[1], ts=rows[0].ts)  # same time, ids apart
    return rows


def views(rows: list[LedgerRow]) -> list[tuple[View, list[dict[str, Any]]]]:
    dicts = [msgspec.to_builtins(r) for r in rows]
    inside = (T0 + 10.5 * 86400, T0 + 33.25 * 86400)
    return [(View(T0 - 1, T0 + SPAN + 1), dicts),
            (View(*inside), [r for r in dicts if inside[0] <= r["ts"] < inside[1]]),
            (View(*inside, key="key_b"), [r for r in dicts if inside[0] <= r["ts"] < inside[1]
                                          and r["key_lineage"] == "key_b"]),
            (View(T0 - 1, T0 + SPAN + 1, key="(no key)"),
             [r for r in dicts if r["key_lineage"] is None]),
            (View(T0 - 100, T0 - 1), [])]


def shown(s: Stats) -> dict[str, Any]:
    """A store's Stats in the shape the reference computes."""
    return {"requests": s.requests, "errors": s.errors,
            "latency_ms": {"p50": s.latency_ms.p50, "p95": s.latency_ms.p95},
            "ttft_ms": {"p50": s.ttft_ms.p50, "p95": s.ttft_ms.p95},
            "cache": {"hits": s.cache_hits, "lookups": s.cache_lookups,
                      "saved_usd": s.saved_usd},
            "cost_usd": s.cost_usd,
            "tokens": {"input": s.input_tokens, "output": s.output_tokens},
            "top": {dim: [{"name": t.name, "cost_usd": t.cost_usd, "requests": t.requests}
                          for t in s.top[dim]] for dim in TOP}}


async def test_spend_per_bucket_and_group_equals_the_rows(store: Store) -> None:
    rows = ledger()
    await store.ledger.append(rows[:150])
    await store.ledger.append(rows[150:])
    for view, want_rows in views(rows):
        for bucket in BUCKETS:
            for stack in STACKS:
                got = await store.dashboard.spend(view, bucket, stack)
                assert [(t, s.name) for t, s in got] == sorted(
                    (t, s.name) for t, s in got)  # ordered by bucket, then name
                ref.same({(t, s.name): (s.cost_usd, s.requests) for t, s in got},
                         ref.spend(want_rows, bucket, stack), f"{view} {bucket} {stack}")


async def test_stats_equal_the_rows(store: Store) -> None:
    rows = ledger()
    await store.ledger.append(rows)
    for view, want_rows in views(rows):
        want = ref.stats(want_rows)
        for part in ("error_rate",):
            del want[part]
        del want["cache"]["hit_rate"]
        got = shown(await store.dashboard.stats(view))
        if split(view).days is not None:  # percentiles off the daily bins: within 1 %
            for q in ("latency_ms", "ttft_ms"):
                for p in ("p50", "p95"):
                    assert got[q][p] == pytest.approx(want[q][p], rel=0.01), (view, q, p)
                del want[q]
        ref.same(got, want, str(view))


@pytest.mark.parametrize("only", [
    {}, {"model": "gpt-4o"}, {"model": "(none)"}, {"status": "error"}, {"status": "ok"},
    {"model": "claude", "status": "ok"}])
async def test_the_tail_pages_newest_first(store: Store, only: dict[str, Any]) -> None:
    rows = ledger()
    await store.ledger.append(rows)
    for view, want_rows in views(rows)[1:4]:
        want = [r for r in want_rows
                if only.get("model") in (None, ref.LABELS["model"](r))
                and only.get("status") in (None, "error" if ref.failed(r) else "ok")]
        want.sort(key=lambda r: (r["ts"], r["id"]), reverse=True)
        got: list[LedgerRow] = []
        before = None
        while True:
            page = await store.dashboard.tail(view, TailFilter(limit=7, before=before, **only))
            got += page
            if len(page) < 7:
                break
            before = (page[-1].ts, page[-1].id)
        assert [msgspec.to_builtins(r) for r in got] == want, (view, only)


async def test_fired_alerts_come_back_newest_first(store: Store) -> None:
    def alert(at: float, scope: str, name: str) -> FiredAlert:
        return FiredAlert(at, "budget", scope, name, f"{scope} {name} at {at}",
                          msgspec.json.encode({"at": at, "scope": scope}))

    fired = [alert(10, "key", "key_a"), alert(20, "global", ""), alert(30, "key", "key_b"),
             alert(40, "key", "key_a")]
    for a in fired:
        await store.alerts.record(a)
    assert await store.alerts.fired(0, 100, None, 10) == fired[::-1]
    assert await store.alerts.fired(0, 100, "key_a", 10) == [fired[3], fired[0]]
    assert await store.alerts.fired(15, 40, None, 1) == [fired[2]]
    got = (await store.alerts.fired(0, 100, None, 1))[0]
    assert msgspec.json.decode(got.detail) == {"at": 40, "scope": "key"}


async def test_counts_are_whole_numbers_on_every_path(store: Store) -> None:
    """Requests come back as ints (the API writes them as JSON numbers) whether a
    window is read from rows or from the daily totals."""
    rows = ledger()
    await store.ledger.append(rows)
    for view, _ in views(rows):
        for bucket in BUCKETS:
            for _, s in await store.dashboard.spend(view, bucket, "model"):
                assert type(s.requests) is int, (view, bucket)
        st = await store.dashboard.stats(view)
        assert type(st.requests) is int and type(st.errors) is int
        assert all(type(t.requests) is int for top in st.top.values() for t in top), view


async def _figures(board: DashboardStore, rows: list[LedgerRow]) -> list[Any]:
    """Every spend series and stats of the views: what a dashboard shows."""
    out: list[Any] = []
    for view, _ in views(rows):
        for bucket in BUCKETS:
            for stack in STACKS:
                out.append(sorted((t, s.name, round(s.cost_usd, 12), s.requests)
                                  for t, s in await board.spend(view, bucket, stack)))
        st = await board.stats(view)
        out.append(dataclasses.replace(st, cost_usd=round(st.cost_usd, 12),
                                       saved_usd=round(st.saved_usd, 12), top={}))
    return out


async def test_an_embedded_ledger_from_before_the_daily_totals_is_totalled_at_open(
        tmp_path: Path) -> None:
    rows = ledger()
    s = EmbeddedStore(str(tmp_path / "s"))
    await s.ledger.append(rows)
    want = await _figures(s.dashboard, rows)
    await s.close()
    db = sqlite3.connect(tmp_path / "s" / "tollway.db")
    db.executescript("DROP TABLE dash_totals; DROP TABLE dash_groups; DROP TABLE dash_bins; "
                     "DROP TABLE dash_ready;")
    db.close()
    s = EmbeddedStore(str(tmp_path / "s"))
    try:
        assert await _figures(s.dashboard, rows) == want
    finally:
        await s.close()


async def test_postgres_totals_rows_written_at_once_by_many_writers_and_before_it(
        postgres: ScratchPostgres) -> None:
    """Concurrent inserts (replicas flushing together) each add their rows once; and
    migration 0012's statement totals a ledger written before it the same way."""
    rows = ledger(600)
    pg = PostgresStore(await postgres.shared())
    await pg.open()
    try:
        store = PostgresDashboard(pg)
        await asyncio.gather(*(pg.ledger.append(rows[i:i + 25]) for i in range(0, 600, 25)))
        await pg.ledger.append(rows[:50])  # written again: skipped, and not counted
        embedded = EmbeddedStore(str(Path(tempfile.mkdtemp()) / "s"))
        await embedded.ledger.append(rows)
        want = await _figures(embedded.dashboard, rows)
        await embedded.close()
        assert await _figures(store, rows) == want
        await pg.pool.execute("TRUNCATE dash_totals, dash_groups, dash_bins")
        await pg.pool.execute("DO $f$ BEGIN EXECUTE dash_add_sql('ledger'); END $f$")
        assert await _figures(store, rows) == want
    finally:
        await pg.close()


@pytest.mark.parametrize("named", [1, 3])
async def test_groups_past_the_named_ones_are_one_other_per_bucket(store: Store,
                                                                   named: int) -> None:
    rows = ledger()
    await store.ledger.append(rows)
    for view, want_rows in views(rows)[:3]:
        for bucket in ("hour", "day"):
            per = ref.spend(want_rows, bucket, "user")
            ranked = ref.top(want_rows, "user", named)
            keep = {name for name, _, _ in ranked}
            want: dict[tuple[int, str], tuple[float, int]] = {}
            for (t, name), (c, n) in per.items():
                k = (t, name if name in keep else "(other)")
                c0, n0 = want.get(k, (0.0, 0))
                want[k] = (c0 + c, n0 + n)
            got = await store.dashboard.spend(view, bucket, "user", named)
            ref.same({(t, s.name): (s.cost_usd, s.requests) for t, s in got}, want,
                     f"{view} {bucket}")
            assert all(s.other == (s.name == "(other)") for _, s in got)
            for t in {t for t, _ in got}:  # each bucket: named by name, then other
                names = [(s.other, s.name) for u, s in got if u == t]
                assert names == sorted(names)
