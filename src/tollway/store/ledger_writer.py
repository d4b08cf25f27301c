"""The ledger writer: exactly one row per request, written in batches off the request
path and never dropped.

`Ledger.record` only appends to a buffer. A background task writes the buffer every
`flush_seconds` (or sooner when `batch_rows` are waiting); a failed write keeps the
rows and retries with backoff. Past `max_buffered_rows` the oldest rows go to a
spill file in the store directory, which is replayed when the store is back. On
shutdown the buffer is flushed. Row ids make writes idempotent, so a retried batch
is never counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import msgspec

from tollway import tasks
from tollway.accounting.rows import LedgerRow
from tollway.config import LedgerConfig
from tollway.store.base import LedgerStore

log = logging.getLogger("tollway.ledger")

_encode = msgspec.json.Encoder().encode
_decode_row = msgspec.json.Decoder(LedgerRow).decode


class Ledger:
    def __init__(self, store: LedgerStore, config: LedgerConfig, spill_dir: str) -> None:
        self.store = store
        self.config = config
        self.spill = Path(spill_dir) / "ledger-spill.jsonl"
        self._rows: list[LedgerRow] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.written = 0

    def record(self, row: LedgerRow) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.config.batch_rows:
            self._wake.set()
        if len(self._rows) > self.config.max_buffered_rows:
            self._spill_oldest()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tollway-ledger")

    async def close(self) -> None:
        task, self._task = self._task, None
        await tasks.stop(task)
        await self.flush()
        if self._rows:
            self._spill_oldest(len(self._rows))  # the store is down: keep them on disk

    @property
    def pending(self) -> int:
        return len(self._rows)

    async def flush(self) -> bool:
        """Write everything buffered (and spilled). False if the store refused."""
        async with self._lock:
            try:
                await self._replay_spill()
                while self._rows:
                    batch = self._rows[: self.config.batch_rows]
                    await self.store.append(batch)
                    del self._rows[: len(batch)]
                    self.written += len(batch)
            except Exception as e:  # the store is down: keep the rows, try again later
                log.warning("ledger write failed (%s rows waiting): %s", len(self._rows), e)
                return False
            return True

    async def _run(self) -> None:
        backoff = self.config.flush_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            ok = await self.flush()
            backoff = self.config.flush_seconds if ok else min(backoff * 2, 30.0)

    def _spill_oldest(self, n: int | None = None) -> None:
        n = n if n is not None else len(self._rows) - self.config.max_buffered_rows
        out, self._rows = self._rows[:n], self._rows[n:]
        self.spill.parent.mkdir(parents=True, exist_ok=True)
        with self.spill.open("ab") as f:
            f.write(b"".join(_encode(r) + b"\n" for r in out))
        log.error("ledger store unavailable: %d rows spilled to %s", len(out), self.spill)

    async def _replay_spill(self) -> None:
        if not self.spill.exists():
            return
        taken = self.spill.with_suffix(".replaying")
        os.replace(self.spill, taken)
        rows = [_decode_row(line) for line in taken.read_bytes().splitlines() if line]
        try:
            for i in range(0, len(rows), self.config.batch_rows):
                await self.store.append(rows[i: i + self.config.batch_rows])
        except Exception:
            # Put them back in front of anything spilled meanwhile.
            later = self.spill.read_bytes() if self.spill.exists() else b""
            self.spill.write_bytes(taken.read_bytes() + later)
            taken.unlink()
            raise
        taken.unlink()
        self.written += len(rows)

