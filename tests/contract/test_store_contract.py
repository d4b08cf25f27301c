"""The store contract: atomic all-or-nothing reservations, settle-once, expiring
holds, idempotent ledger appends, spend grouping, keys by hash and id."""

from __future__ import annotations

import asyncio
import time

import pytest

from tollway.accounting.rows import LedgerRow
from tollway.keys import mint
from tollway.store.base import Claim, Store


async def test_reserve_is_all_or_nothing(store: Store) -> None:
    b = store.budgets
    got = await b.reserve("h1", [Claim("a", 10, 6), Claim("b", 10, 6)], 1e12, 0)
    assert got.refused is None and got.levels == [6, 6]
    # "a" has room for 4, "b" too: a claim of 5 on b fails and nothing is taken on a.
    got = await b.reserve("h2", [Claim("a", 10, 3), Claim("b", 10, 5)], 1e12, 0)
    assert got.refused == 1 and got.levels == [6, 6]
    assert await b.levels(["a", "b"], 0) == [6, 6]


async def test_settle_replaces_the_hold_with_the_real_amount_once(store: Store) -> None:
    b = store.budgets
    await b.reserve("h1", [Claim("usd", 1.0, 0.5)], 1e12, 0)
    assert await b.settle("h1", [("usd", 0.125)]) is True
    assert await b.levels(["usd"], 0) == [0.125]
    assert await b.settle("h1", [("usd", 0.125)]) is False  # a second settle is ignored
    assert await b.levels(["usd"], 0) == [0.125]


async def test_a_hold_settled_before_its_reserve_arrives_is_never_taken(store: Store) -> None:
    """A request cancelled while its reserve was in flight settles first (to 0)."""
    b = store.budgets
    assert await b.settle("late", [("c", 0.0)]) is True
    got = await b.reserve("late", [Claim("c", 10, 8)], 1e12, 0)
    assert got.refused is None
    assert await b.levels(["c"], 0) == [0.0]
    assert (await b.reserve("next", [Claim("c", 10, 8)], 1e12, 0)).refused is None


async def test_expired_holds_stop_counting_but_their_settle_still_charges(store: Store) -> None:
    b = store.budgets
    await b.reserve("h1", [Claim("c", 10, 8)], expires_at=100, now=0)
    assert (await b.reserve("h2", [Claim("c", 10, 8)], 200, now=50)).refused == 0
    assert (await b.reserve("h3", [Claim("c", 10, 8)], 300, now=101)).refused is None
    await b.settle("h1", [("c", 1)])  # the late settle of the expired hold
    assert await b.levels(["c"], 101) == [9]


async def test_concurrent_reservations_never_overshoot(store: Store) -> None:
    b = store.budgets

    async def one(i: int) -> bool:
        got = await b.reserve(f"h{i}", [Claim("k", 10.0, 1.0)], 1e12, 0)
        return got.refused is None

    admitted = await asyncio.gather(*(one(i) for i in range(300)))
    assert sum(admitted) == 10
    assert await b.levels(["k"], 0) == [10.0]


async def test_add_accumulates(store: Store) -> None:
    assert await store.budgets.add("h", 1.5) == 1.5
    assert await store.budgets.add("h", 2.0) == 3.5


def _row(i: int, **kw: object) -> LedgerRow:
    base: dict[str, object] = {"id": f"row{i}", "request_id": f"r{i}", "ts": 1_700_000_000 + i,
                               "status": 200, "outcome": "ok"}
    return LedgerRow(**{**base, **kw})  # type: ignore[arg-type]


async def test_ledger_appends_are_idempotent_and_grouped(store: Store) -> None:
    rows = [_row(0, feature="search", cost_usd=0.25, input_tokens=10, output_tokens=5),
            _row(1, feature="search", cost_usd=0.5, input_tokens=1, output_tokens=2),
            _row(2, feature="chat", cost_usd=1.0, stream=True, estimated=True)]
    await store.ledger.append(rows)
    await store.ledger.append(rows[:2])  # a retried batch
    got = await store.ledger.rows()
    assert [r.id for r in got] == ["row0", "row1", "row2"]
    assert got[2] == rows[2]
    spend = {s.group: s for s in await store.ledger.spend("feature")}
    assert spend["search"].requests == 2 and spend["search"].cost_usd == pytest.approx(0.75)
    assert spend["search"].input_tokens == 11 and spend["search"].output_tokens == 7
    assert spend["chat"].cost_usd == 1.0
    only_last = await store.ledger.spend("feature", since=1_700_000_002)
    assert [s.group for s in only_last] == ["chat"]


async def test_spend_by_model_is_the_name_asked_and_by_upstream_what_answered(
        store: Store) -> None:
    rows = [_row(0, model_asked="fast", provider="openai", model="gpt-4o-mini", cost_usd=0.25),
            _row(1, model_asked="fast", provider="anthropic", model="claude-3-5-haiku",
                 cost_usd=0.5),  # a fallback answered
            _row(2, model_asked="fast", status=429, outcome="refused"),  # nothing upstream
            _row(3, model_asked="gpt-4o-mini", provider="openai", model="gpt-4o-mini",
                 cost_usd=1.0),
            _row(4, model_asked="", model="", provider="")]
    await store.ledger.append(rows)
    by_model = [(s.group, s.requests, s.cost_usd) for s in await store.ledger.spend("model")]
    assert by_model == [("(none)", 1, 0.0), ("fast", 3, pytest.approx(0.75)),
                        ("gpt-4o-mini", 1, 1.0)]
    upstream = [(s.group, s.requests, s.cost_usd) for s in await store.ledger.spend("upstream")]
    assert upstream == [("(none)", 2, 0.0), ("anthropic/claude-3-5-haiku", 1, 0.5),
                        ("openai/gpt-4o-mini", 2, pytest.approx(1.25))]


async def test_a_batch_lines_row_keeps_its_batch_and_spend_groups_by_it(store: Store) -> None:
    rows = [_row(0, batch_id="batch_a", cost_usd=0.25, input_tokens=3, output_tokens=4),
            _row(1, batch_id="batch_a", kind="embeddings", cost_usd=0.5, input_tokens=8),
            _row(2, batch_id="batch_b", cost_usd=1.0, output_tokens=2),
            _row(3, cost_usd=2.0)]  # an interactive request
    await store.ledger.append(rows)
    got = await store.ledger.rows()
    assert got == rows  # batch_id (and kind) back as written
    spend = [(s.group, s.requests, s.input_tokens, s.output_tokens, s.cost_usd)
             for s in await store.ledger.spend("batch")]
    assert spend == [("(none)", 1, 0, 0, 2.0), ("batch_a", 2, 11, 4, 0.75),
                     ("batch_b", 1, 0, 2, 1.0)]
    assert {s.group: s.requests for s in await store.ledger.spend("kind")} == {
        "chat": 3, "embeddings": 1}


async def test_a_rows_trace_id_is_kept(store: Store) -> None:
    """Tracing on: the row leads to its spans (PostgreSQL's column, migration 0013)."""
    rows = [_row(0, trace_id="4bf92f3577b34da6a3ce929d0e0e4736"), _row(1)]  # off: None
    await store.ledger.append(rows)
    assert await store.ledger.rows() == rows


async def test_a_batch_line_written_again_keeps_its_first_row(store: Store) -> None:
    """A line run again after a crash writes a second row under its id (another time,
    another cost): the ledger keeps the first, as budgets count the first settle."""
    first = _row(0, batch_id="batch_a", cost_usd=0.25)
    again = _row(0, batch_id="batch_a", ts=first.ts + 60, cost_usd=0.5)
    await store.ledger.append([first, _row(1, cost_usd=1.0)])
    await store.ledger.append([_row(2, batch_id="batch_a"), again, again])
    assert [(r.id, r.cost_usd) for r in await store.ledger.rows()] == [
        ("row0", 0.25), ("row1", 1.0), ("row2", 0.0)]
    assert [(s.group, s.requests, s.cost_usd) for s in await store.ledger.spend("batch")] == [
        ("(none)", 1, 1.0), ("batch_a", 2, 0.25)]


async def test_ledger_says_what_rows_charged_per_period(store: Store) -> None:
    """What a rebuild of the budget counters reads: rows summed per period and per the
    fields asked for, the rows named by `exclude` and those that cost nothing left out."""
    day, month = 1_700_000_010.0, 1_700_000_005.0
    await store.ledger.append([
        _row(0, team="a", cost_usd=0.5, input_tokens=3, output_tokens=4),  # before the month
        _row(6, team="a", cost_usd=0.25, input_tokens=1, output_tokens=1),  # the month
        _row(7, team="b", cost_usd=0.125),
        _row(11, team="a", cost_usd=1.0, output_tokens=9),  # today
        _row(12, team="a", cost_usd=8.0),  # settled since a loss: left out
        _row(13, team="a")])  # nothing charged

    async def exclude() -> set[str]:
        return {"row12"}

    got = await store.ledger.charged(["team"], day, month, exclude)
    assert sorted((c.period, c.team, c.usd, c.tokens) for c in got) == [
        ("day", "a", 1.0, 9.0), ("month", "a", 0.25, 2.0), ("month", "b", 0.125, 0.0),
        ("total", "a", 0.5, 7.0)]
    assert all(c.user is None and c.key_id is None for c in got)


async def test_ledger_rows_come_in_pages(store: Store) -> None:
    rows = [_row(i) for i in range(7)] + [_row(7, ts=1_700_000_003.0)]  # a ts tie: by id
    await store.ledger.append(rows)
    expected = sorted(rows, key=lambda r: (r.ts, r.id))
    pages, after = [], None
    while True:
        page = await store.ledger.rows(after=after, limit=3)
        if not page:
            break
        pages.append([r.id for r in page])
        after = (page[-1].ts, page[-1].id)
    assert [i for p in pages for i in p] == [r.id for r in expected]
    assert [len(p) for p in pages] == [3, 3, 2]
    within = await store.ledger.rows(since=1_700_000_002, until=1_700_000_005, limit=2)
    assert [r.id for r in within] == [r.id for r in expected if
                                      1_700_000_002 <= r.ts < 1_700_000_005][:2]


async def test_keys_by_hash_and_id(store: Store) -> None:
    secret, rec = mint(time.time(), name="ci", team="t1", features=["search"])
    await store.keys.put(rec)
    assert (await store.keys.by_id(rec.id)) == rec
    assert (await store.keys.by_hash(rec.hash)) == rec
    assert secret not in repr(rec)
    rec.disabled = True
    await store.keys.put(rec)
    assert (await store.keys.by_hash(rec.hash)).disabled  # type: ignore[union-attr]
    assert [k.id for k in await store.keys.all()] == [rec.id]


async def test_once_is_first_only(store: Store) -> None:
    assert await store.once.first("x", 1e12) is True
    assert await store.once.first("x", 1e12) is False


# Rate limits: exact sliding windows (store.limits).

async def test_limit_entry_counts_until_exactly_window_after_it(store: Store) -> None:
    lim = store.limits
    assert (await lim.take("e1", [Claim("r", 2, 1)], 60, now=10.1)).levels == [1]
    assert (await lim.take("e2", [Claim("r", 2, 1)], 60, now=30.0)).levels == [2]
    refused = await lim.take("e3", [Claim("r", 2, 1)], 60, now=70.09)
    assert refused.refused == 0 and refused.levels == [2]
    assert await lim.free_at("r", 1, 2, 60, now=70.09) == 10.1 + 60
    got = await lim.take("e4", [Claim("r", 2, 1)], 60, now=10.1 + 60)  # e1 has left
    assert got.refused is None and got.levels == [2]


async def test_limit_take_is_all_or_nothing(store: Store) -> None:
    lim = store.limits
    await lim.take("e1", [Claim("req", 10, 1), Claim("tok", 100, 90)], 60, 0)
    got = await lim.take("e2", [Claim("req", 10, 1), Claim("tok", 100, 20)], 60, 1)
    assert got.refused == 1 and got.levels == [1, 90]
    # Nothing was recorded on "req" for the refused entry.
    assert (await lim.take("e3", [Claim("req", 10, 1)], 60, 2)).levels == [2]


async def test_limit_adjust_replaces_the_worst_case(store: Store) -> None:
    lim = store.limits
    await lim.take("e1", [Claim("tok", 100, 80)], 60, 0)
    assert (await lim.take("e2", [Claim("tok", 100, 30)], 60, 1)).refused == 0
    await lim.adjust("e1", [("tok", 25)])
    assert (await lim.take("e2", [Claim("tok", 100, 30)], 60, 1)).levels == [55]
    assert await lim.free_at("tok", 60, 100, 60, 2) == 60.0  # e1's 25 leave at 60
    await lim.adjust("e1", [("tok", 5)])  # replaces, not adds
    assert await lim.free_at("tok", 60, 100, 60, 2) == 2
    await lim.adjust("gone", [("tok", 1000)])  # an unknown (or slid out) entry: no-op
    await lim.adjust("e1", [("elsewhere", 5)])
    assert (await lim.take("e3", [Claim("tok", 100, 65)], 60, 3)).levels == [100]


async def test_limit_free_at(store: Store) -> None:
    lim = store.limits
    assert await lim.free_at("never-used", 5, 10, 60, 7) == 7
    for i, t in enumerate((0, 10, 20)):
        await lim.take(f"e{i}", [Claim("c", 10, 3)], 60, t)
    assert await lim.free_at("c", 1, 10, 60, 30) == 30  # 9 of 10: fits now
    assert await lim.free_at("c", 3, 10, 60, 30) == 60  # the first leaves at 60
    assert await lim.free_at("c", 7, 10, 60, 30) == 70
    assert await lim.free_at("c", 10, 10, 60, 30) == 80
    assert await lim.free_at("c", 11, 10, 60, 30) == float("inf")


async def test_concurrent_takes_never_overshoot(store: Store) -> None:
    lim = store.limits

    async def one(i: int) -> bool:
        got = await lim.take(f"e{i}", [Claim("k", 10, 1)], 60, 0)
        return got.refused is None

    admitted = await asyncio.gather(*(one(i) for i in range(300)))
    assert sum(admitted) == 10
