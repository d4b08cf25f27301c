"""The ledger writer: batches off the request path, never drops a row (the store
down -> buffer and retry; past the bound -> spill to disk and replay)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tollway.accounting.rows import LedgerRow, SpendRow
from tollway.config import LedgerConfig
from tollway.store.ledger_writer import Ledger


class FlakyLedgerStore:
    """A ledger store that is down until told otherwise (the embedded and shared
    stores are tested for real in tests/contract; this one stands for an outage)."""

    def __init__(self) -> None:
        self.up = False
        self.saved: dict[str, LedgerRow] = {}

    async def append(self, rows: Sequence[LedgerRow]) -> None:
        if not self.up:
            raise ConnectionError("store down")
        for r in rows:
            self.saved.setdefault(r.id, r)

    async def rows(self, since: float | None = None,
                   until: float | None = None) -> list[LedgerRow]:
        return list(self.saved.values())

    async def spend(self, by: str, since: float | None = None,
                    until: float | None = None) -> list[SpendRow]:
        return []


def _row(i: int) -> LedgerRow:
    return LedgerRow(id=f"row{i}", request_id=f"r{i}", ts=float(i), status=200, outcome="ok")


async def test_rows_wait_for_the_store_and_are_written_once_when_it_returns(
        tmp_path: Path) -> None:
    store = FlakyLedgerStore()
    ledger = Ledger(store, LedgerConfig(batch_rows=3, max_buffered_rows=5), str(tmp_path))
    for i in range(8):
        ledger.record(_row(i))
    assert not await ledger.flush()
    # Past the bound the oldest went to disk; nothing is lost.
    assert ledger.pending == 5
    assert (tmp_path / "ledger-spill.jsonl").read_bytes().count(b"\n") == 3
    store.up = True
    assert await ledger.flush()
    assert sorted(store.saved) == sorted(f"row{i}" for i in range(8))
    assert ledger.pending == 0 and not (tmp_path / "ledger-spill.jsonl").exists()


async def test_close_spills_what_the_store_would_not_take(tmp_path: Path) -> None:
    store = FlakyLedgerStore()
    ledger = Ledger(store, LedgerConfig(), str(tmp_path))
    ledger.start()
    ledger.record(_row(1))
    await ledger.close()
    # The next process replays the spill on its first flush.
    store.up = True
    again = Ledger(store, LedgerConfig(), str(tmp_path))
    assert await again.flush()
    assert list(store.saved) == ["row1"]
