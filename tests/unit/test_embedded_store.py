"""The embedded store keeps settled budget levels across a restart (they are written
with the ledger batch); holds die with the process. Its ledger file keeps every field,
and a batch line's first row across restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from tollway.accounting.rows import LedgerRow
from tollway.store.base import Claim
from tollway.store.embedded import EmbeddedStore


async def test_settled_levels_survive_a_restart_and_holds_do_not(tmp_path: Path) -> None:
    s = EmbeddedStore(str(tmp_path))
    await s.budgets.reserve("h1", [Claim("key/k/usd/total", 10, 4)], 1e12, 0)
    await s.budgets.settle("h1", [("key/k/usd/total", 1.5)])
    await s.budgets.reserve("h2", [Claim("key/k/usd/total", 10, 4)], 1e12, 0)  # in flight
    await s.ledger.append([LedgerRow(id="r", request_id="r", ts=0, status=200,
                                     outcome="ok", cost_usd=1.5)])
    await s.close()
    s2 = EmbeddedStore(str(tmp_path))
    try:
        assert await s2.budgets.levels(["key/k/usd/total"], 0) == [1.5]
    finally:
        await s2.close()


async def test_a_rows_batch_is_read_back_from_the_file(tmp_path: Path) -> None:
    row = LedgerRow(id="row_b_batch_1_0", request_id="r", ts=1.0, status=200, outcome="ok",
                    kind="embeddings", batch_id="batch_1", cost_usd=0.25)
    s = EmbeddedStore(str(tmp_path))
    await s.ledger.append([row, LedgerRow(id="i", request_id="i", ts=2.0, status=200,
                                          outcome="ok")])
    await s.close()
    s2 = EmbeddedStore(str(tmp_path))
    try:
        got = await s2.ledger.rows()
        assert got[0] == row and got[1].batch_id is None
        await s2.ledger.append([msgspec.structs.replace(row, ts=3.0, cost_usd=1.0)])
        assert await s2.ledger.rows() == got  # its id was written before this process
    finally:
        await s2.close()


async def test_a_ledger_from_before_the_index_is_filed_when_first_read(tmp_path: Path) -> None:
    rows = [LedgerRow(id=f"r{i}", request_id="r", ts=float(i), status=200, outcome="ok",
                      user=f"u{i}") for i in range(3)]
    db = sqlite3.connect(tmp_path / "tollway.db")
    db.executescript("CREATE TABLE ledger_batches (id TEXT PRIMARY KEY, min_ts REAL NOT NULL, "
                     "max_ts REAL NOT NULL, rows BLOB NOT NULL)")
    db.execute("INSERT INTO ledger_batches VALUES ('old', 0, 2, ?)", (msgspec.json.encode(rows),))
    db.commit()
    db.close()
    s = EmbeddedStore(str(tmp_path))
    try:
        await s.ledger.append([LedgerRow(id="new", request_id="n", ts=3.0, status=200,
                                         outcome="ok")])
        assert [r.id for r in await s.ledger.rows()] == ["r0", "r1", "r2", "new"]
        assert [r.id for r in await s.ledger.rows(since=1, until=3)] == ["r1", "r2"]
    finally:
        await s.close()
