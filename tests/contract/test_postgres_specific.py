"""What the PostgreSQL store adds to the contract: migrations that replicas can race,
key caches kept honest by LISTEN/NOTIFY across replicas, and spend() in SQL that
agrees with spend_of() row for row."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import asyncpg
import msgspec
import pytest

from tollway.accounting.rows import (
    CHARGE_FIELDS,
    SPEND_GROUPS,
    Charged,
    LedgerRow,
    SpendRow,
    charged_of,
    spend_of,
)
from tollway.keys import mint
from tollway.store import postgres as pgmod
from tollway.store.postgres import (
    LEDGER_COLUMNS,
    LISTENER,
    PostgresStore,
    migrate,
    migrations,
)

if TYPE_CHECKING:
    from tests.contract.conftest import ScratchPostgres


@pytest.fixture
async def url(postgres: ScratchPostgres) -> str:
    return await postgres.shared()


@pytest.fixture
async def pg(url: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def _until(cond: Callable[[], bool], within: float = 5.0) -> float:
    """Poll a condition until true; the seconds it took."""
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < within, "timed out"
        await asyncio.sleep(0.001)
    return time.monotonic() - start


# Migrations.

async def test_migrations_apply_once(postgres: ScratchPostgres) -> None:
    url = await postgres.new_database()
    versions = [v for v, _ in migrations()]
    assert versions and versions[0] == 1
    assert await migrate(url) == versions
    assert await migrate(url) == []
    s = PostgresStore(url)
    await s.open()  # open() migrates too: nothing left to do
    try:
        assert await s.migrate() == []
    finally:
        await s.close()
    conn = await asyncpg.connect(url)
    try:
        got = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations "
                                              "ORDER BY version")]
    finally:
        await conn.close()
    assert got == versions


async def test_concurrent_migrations_apply_each_version_exactly_once(
        postgres: ScratchPostgres) -> None:
    url = await postgres.new_database()
    results = await asyncio.gather(*(migrate(url) for _ in range(6)))
    applied = sorted(v for r in results for v in r)
    assert applied == [v for v, _ in migrations()]  # each by exactly one of them
    stores = [PostgresStore(url) for _ in range(3)]  # and replicas opening together
    await asyncio.gather(*(s.open() for s in stores))
    await asyncio.gather(*(s.close() for s in stores))


async def test_ledger_table_has_a_column_per_ledger_row_field(pg: PostgresStore) -> None:
    found = await pg.pool.fetch(
        "SELECT column_name, is_nullable FROM information_schema.columns "
        "WHERE table_name = 'ledger' ORDER BY ordinal_position")
    assert tuple(r[0] for r in found) == LEDGER_COLUMNS
    info = msgspec.inspect.type_info(LedgerRow)
    assert isinstance(info, msgspec.inspect.StructType)
    optional = {f.name for f in info.fields if isinstance(f.type, msgspec.inspect.UnionType)}
    assert {r[0] for r in found if r[1] == "YES"} == optional


# Keys: caches across replicas.

async def test_a_revocation_through_one_replica_reaches_another_by_notify(url: str) -> None:
    a, b = PostgresStore(url), PostgresStore(url)
    await a.open()
    await b.open()
    try:
        _, rec = mint(time.time(), name="ci")
        await a.keys.put(rec)
        assert await b.keys.by_hash(rec.hash) == rec  # b caches it
        assert await b.keys.by_id(rec.id) == rec
        heard = b.keys.invalidations
        revoked = msgspec.structs.replace(rec, revoked_at=time.time())
        await a.keys.put(revoked)
        # Delivery is asynchronous (the server signals listeners at commit), so b hears
        # of it a moment later: within milliseconds, with no TTL or poll involved.
        took = await _until(lambda: b.keys.invalidations > heard)
        assert took < 1.0
        assert await b.keys.by_hash(rec.hash) == revoked
        assert await b.keys.by_id(rec.id) == revoked
        assert await a.keys.by_hash(rec.hash) == revoked  # the writer's own cache: at once
    finally:
        await a.close()
        await b.close()


async def test_a_lost_listen_connection_clears_the_cache_and_listens_again(
        url: str) -> None:
    a, b = PostgresStore(url), PostgresStore(url)
    await a.open()
    await b.open()
    try:
        _, rec = mint(time.time())
        await a.keys.put(rec)
        assert await b.keys.by_hash(rec.hash) == rec
        assert b.keys.caching and b.listens == 1
        async with b.pool.acquire() as conn:  # kill every replica's LISTEN connection
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()", LISTENER)
        assert killed == 2
        await _until(lambda: b.listens == 2 and a.listens == 2)
        assert b.keys.caching
        assert await b.keys.by_hash(rec.hash) == rec  # read through, cached again
        revoked = msgspec.structs.replace(rec, revoked_at=time.time())
        heard = b.keys.invalidations
        await a.keys.put(revoked)
        await _until(lambda: b.keys.invalidations > heard)
        assert await b.keys.by_hash(rec.hash) == revoked
    finally:
        await a.close()
        await b.close()


async def test_without_listen_nothing_is_cached(pg: PostgresStore) -> None:
    _, rec = mint(time.time())
    await pg.keys.put(rec)
    pg.keys.stop_caching()  # as when the LISTEN connection is lost
    assert await pg.keys.by_hash(rec.hash) == rec
    # Changed behind its back (no NOTIFY): it must read through, not serve a copy.
    await pg.pool.execute("UPDATE keys SET record = jsonb_set(record, '{disabled}', 'true')")
    got = await pg.keys.by_hash(rec.hash)
    assert got is not None and got.disabled


async def test_unknown_keys_are_none(pg: PostgresStore) -> None:
    assert await pg.keys.by_hash("0" * 64) is None
    assert await pg.keys.by_id("key_nope") is None


# The ledger: spend in SQL against spend_of in Python.

_DAY = 86_400.0
_NAMES = [None, "", "alpha", "Alpha", "Zeta", "_x", "zz top", "Ärger", "日本"]


def _rows(n: int, seed: int = 7) -> list[LedgerRow]:
    rnd = random.Random(seed)
    start = 1_700_006_400.0  # a UTC midnight
    edges = [start + k * _DAY for k in range(1, 5)]
    rows = []
    for i in range(n):
        if i % 50 == 0:  # right on, and just before, midnight
            edge = rnd.choice(edges)
            ts = edge if i % 100 == 0 else math.nextafter(edge, 0)
        else:
            ts = start + rnd.random() * 5 * _DAY
        rows.append(LedgerRow(
            id=f"row{i:05d}", request_id=f"req{i}", ts=ts, status=rnd.choice([200, 429, 502]),
            outcome=rnd.choice(["ok", "error", "refused"]),
            key_lineage=rnd.choice([None, "", "key_a", "key_b"]),
            user=rnd.choice(_NAMES), team=rnd.choice(_NAMES), feature=rnd.choice(_NAMES),
            model=rnd.choice([None, "", "gpt-x", "claude-y"]),
            model_asked=rnd.choice([None, "", "fast", "smart"]),
            stream=rnd.random() < 0.5, input_tokens=rnd.randrange(0, 10**6),
            output_tokens=rnd.randrange(0, 10**5), cached_tokens=rnd.randrange(0, 100),
            cost_usd=rnd.random() / 7, saved_usd=rnd.choice([0.0, rnd.random() / 3]),
            latency_ms=rnd.random() * 1000, ttft_ms=rnd.choice([None, rnd.random() * 100]),
            error=rnd.choice([None, "rate_limit"]), retries=rnd.randrange(0, 3),
            estimated=rnd.random() < 0.1, priced=rnd.random() < 0.9,
            batch_id=rnd.choice([None, "", "batch_1", "batch_2"])))
    return rows


def _assert_same_spend(got: list[SpendRow], want: list[SpendRow]) -> None:
    assert [s.group for s in got] == [s.group for s in want]
    for g, w in zip(got, want, strict=True):
        assert (g.requests, g.input_tokens, g.output_tokens) == (
            w.requests, w.input_tokens, w.output_tokens)
        # The same floats, added up in another order.
        assert g.cost_usd == pytest.approx(w.cost_usd, rel=1e-12)
        assert g.saved_usd == pytest.approx(w.saved_usd, rel=1e-12)


async def test_spend_in_sql_matches_spend_of(pg: PostgresStore) -> None:
    rows = _rows(10_000)
    batches = [rows[i: i + 1000] for i in range(0, len(rows), 1000)]
    for batch in batches:
        await pg.ledger.append(batch)
    by_time = sorted(rows, key=lambda r: (r.ts, r.id))
    assert await pg.ledger.rows() == by_time  # every field back exactly, ts included

    for by in SPEND_GROUPS:
        _assert_same_spend(await pg.ledger.spend(by), spend_of(rows, by))
    since, until = 1_700_006_400.0 + _DAY, 1_700_006_400.0 + 3 * _DAY
    inside = [r for r in rows if since <= r.ts < until]
    assert await pg.ledger.rows(since, until) == sorted(inside, key=lambda r: (r.ts, r.id))
    for by in SPEND_GROUPS:
        _assert_same_spend(await pg.ledger.spend(by, since, until), spend_of(inside, by))

    before = {by: await pg.ledger.spend(by) for by in SPEND_GROUPS}
    await pg.ledger.append(batches[3])  # a retried batch
    await pg.ledger.append(batches[5][:10] + batches[5][:10])  # and a row twice in one
    assert await pg.pool.fetchval("SELECT count(*) FROM ledger") == len(rows)
    assert {by: await pg.ledger.spend(by) for by in SPEND_GROUPS} == before

    with pytest.raises(ValueError):
        await pg.ledger.spend("colour")


def _charged_key(c: Charged) -> tuple[tuple[bool, str], ...]:
    return tuple((getattr(c, f) is None, getattr(c, f) or "")
                 for f in ("period", *CHARGE_FIELDS))


async def test_charged_in_sql_matches_charged_of(pg: PostgresStore) -> None:
    """What a rebuild of the budget counters reads: the same groups and sums in SQL as
    in Python, for any fields grouped by, with the rows it is told to leave out."""
    rnd = random.Random(3)
    rows = [msgspec.structs.replace(
        r, conversation=c, conversation_owner=c and rnd.choice(["key_a", "key_a/bob"]),
        key_id=rnd.choice([None, "key_a", "key_b"]),
        cost_usd=rnd.choice([r.cost_usd, 0.0]),
        input_tokens=rnd.choice([r.input_tokens, 0]), output_tokens=r.output_tokens % 7)
        for r in _rows(3000, seed=11)
        for c in [rnd.choice([None, "c1", "c2"])]]
    await pg.ledger.append(rows)
    day, month = 1_700_006_400.0 + 3 * _DAY, 1_700_006_400.0 + _DAY
    left_out = {r.id for r in rows[::7]}

    async def exclude() -> set[str]:
        return left_out

    for by in ([], ["team"], ["key_id", "user"], list(CHARGE_FIELDS)):
        got = sorted(await pg.ledger.charged(by, day, month, exclude), key=_charged_key)
        want = sorted(charged_of(rows, by, day, month, left_out), key=_charged_key)
        assert [_charged_key(c) for c in got] == [_charged_key(c) for c in want]
        for g, w in zip(got, want, strict=True):
            assert g.tokens == w.tokens
            assert g.usd == pytest.approx(w.usd, rel=1e-12)
    with pytest.raises(ValueError):
        await pg.ledger.charged(["model"], day, month, exclude)


async def test_a_nul_in_a_caller_supplied_field_does_not_block_the_batch(
        pg: PostgresStore) -> None:
    rows = [LedgerRow(id="nul", request_id="r", ts=1.0, status=200, outcome="ok",
                      user="a\x00b", feature="back\\u0000slash"),
            LedgerRow(id="fine", request_id="r", ts=2.0, status=200, outcome="ok")]
    await pg.ledger.append(rows)
    got = await pg.ledger.rows()
    assert [r.user for r in got] == ["a\ufffdb", None]
    assert got[0].feature == "back\\u0000slash"  # a backslash, not a NUL: kept
    assert got[1] == rows[1]


async def test_odd_floats_survive_the_trip(pg: PostgresStore) -> None:
    exact = LedgerRow(id="exact", request_id="r", ts=1_700_000_000.123456789, status=200,
                      outcome="ok", cost_usd=5e-324, saved_usd=-0.0, latency_ms=1e308,
                      ttft_ms=0.1 + 0.2)
    # JSON cannot carry NaN or infinity: required floats come back NaN, optional None.
    odd = LedgerRow(id="odd", request_id="r", ts=1_700_000_001.0, status=200,
                    outcome="ok", cost_usd=math.nan, latency_ms=math.inf, ttft_ms=math.inf)
    await pg.ledger.append([exact, odd])
    got = await pg.ledger.rows()
    assert got[0] == exact
    assert math.isnan(got[1].cost_usd) and math.isnan(got[1].latency_ms)
    assert got[1].ttft_ms is None


async def test_time_range_queries_use_an_index(pg: PostgresStore) -> None:
    await pg.ledger.append(_rows(10_000, seed=3))
    await pg.pool.execute("ANALYZE ledger")
    since = 1_700_006_400.0 + _DAY
    window = (since, since + 600)  # about 1% of the rows
    page = (-math.inf, "", 1000)  # the ledger's rows come in pages after a cursor
    for sql in (pgmod._ROWS, *pgmod._SPEND.values()):
        args = (*window, *page) if sql is pgmod._ROWS else window
        plan = "\n".join(r[0] for r in await pg.pool.fetch(f"EXPLAIN {sql}", *args))
        assert "Seq Scan" not in plan and "ledger_ts" in plan, plan
