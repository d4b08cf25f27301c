"""The embedded store: budgets and alert marks in memory, keys and the ledger in
SQLite (and uploaded files beside it, embedded_batches.py). One process owns it (the
server is the only writer; the CLI goes through the admin API), so memory is the truth
for budgets and a plain dict makes reserve-and-settle atomic: no await happens between
checking and taking.

SQLite work runs on one dedicated thread, off the event loop. Settled budget
amounts are persisted with the next ledger batch, in the same transaction, so a
restart resumes the current windows where they were (holds are not persisted: a
dead process's holds vanish with it, which is what expiry means here).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import TypeVar

import msgspec

from tollway.accounting.rows import Charged, LedgerRow, SpendRow, charged_of, spend_of
from tollway.keys import KeyRecord
from tollway.store.base import (
    BatchStore,
    BudgetStore,
    CacheStore,
    ConversationStore,
    KeyStore,
    LedgerStore,
    LimitStore,
    OnceStore,
    PartHealth,
    ResponseStore,
)
from tollway.store.embedded_batches import EmbeddedBatches
from tollway.store.embedded_cache import EmbeddedCache
from tollway.store.embedded_conversations import EmbeddedConversations
from tollway.store.embedded_responses import EmbeddedResponses
from tollway.store.memory import MemoryBudgets, MemoryLimits, MemoryOnce
from tollway.store.sqlite import Db

T = TypeVar("T")

# The ledger is stored as batches: one SQLite row per written batch, holding its rows
# as a JSON array. A flush is then one small INSERT: the writer thread takes the GIL
# once and SQLite does no per-row work (row by row, or expanding a JSON array in SQL,
# cost the gateway 15-20% of its throughput on two cores). Reports decode the batches
# that overlap their time window and add up in Python; a fleet's ledger lives in
# PostgreSQL, where reports are SQL.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_batches (
    id TEXT PRIMARY KEY, min_ts REAL NOT NULL, max_ts REAL NOT NULL, rows BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS ledger_batches_ts ON ledger_batches (max_ts, min_ts);
CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, hash TEXT UNIQUE, record BLOB);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, amount REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_lines (id TEXT PRIMARY KEY);
"""
_encode = msgspec.json.Encoder().encode
_decode_batch = msgspec.json.Decoder(list[LedgerRow]).decode


class SqliteKeys:
    """Keys in SQLite, served from memory (this process is the only writer)."""

    def __init__(self, db: Db) -> None:
        self._db = db
        recs = db.call(lambda c: [msgspec.json.decode(r[0], type=KeyRecord)
                                  for r in c.execute("SELECT record FROM keys")])
        self._by_id = {r.id: r for r in recs}
        self._by_hash = {r.hash: r for r in recs}

    async def put(self, rec: KeyRecord) -> None:
        blob = msgspec.json.encode(rec)
        await self._db.run(lambda c: c.execute(
            "INSERT OR REPLACE INTO keys (id, hash, record) VALUES (?, ?, ?)",
            (rec.id, rec.hash, blob)))
        self._by_id[rec.id] = rec
        self._by_hash[rec.hash] = rec

    async def by_hash(self, key_hash: str) -> KeyRecord | None:
        return self._by_hash.get(key_hash)

    async def by_id(self, key_id: str) -> KeyRecord | None:
        return self._by_id.get(key_id)

    async def all(self) -> list[KeyRecord]:
        return sorted(self._by_id.values(), key=lambda r: r.created_at)


def _first_lines(c: sqlite3.Connection, rows: Sequence[LedgerRow]) -> Sequence[LedgerRow]:
    """`rows` but the batch lines' whose id was written before: a line run again (after
    a crash) keeps its first row, as PostgreSQL's primary key keeps it. Only batch lines
    are looked up (one index insert each): an interactive row's id is never reused, and
    a batch of rows written again is one ignored insert."""
    if all(r.batch_id is None for r in rows):
        return rows
    kept = [r for r in rows if r.batch_id is None or c.execute(
        "INSERT OR IGNORE INTO ledger_lines (id) VALUES (?)", (r.id,)).rowcount]
    return rows if len(kept) == len(rows) else kept


class SqliteLedger:
    def __init__(self, db: Db, budgets: MemoryBudgets) -> None:
        self._db = db
        self._budgets = budgets

    async def append(self, rows: Sequence[LedgerRow]) -> None:
        if not rows:
            return
        blob = _encode(rows)
        # A batch's id is its rows' ids: writing the same batch again changes nothing.
        batch_id = f"{rows[0].id}..{rows[-1].id}/{len(rows)}"
        lo, hi = min(r.ts for r in rows), max(r.ts for r in rows)
        counters = self._budgets.take_dirty()

        def write(c: sqlite3.Connection) -> None:
            with c:  # one transaction: the rows and the budget levels they settled
                c.execute("BEGIN")
                kept = _first_lines(c, rows)
                c.execute("INSERT OR IGNORE INTO ledger_batches (id, min_ts, max_ts, rows) "
                          "VALUES (?, ?, ?, ?)",
                          (batch_id, lo, hi, blob if kept is rows else _encode(kept)))
                c.executemany("INSERT OR REPLACE INTO counters (name, amount) VALUES (?, ?)",
                              counters)
        try:
            await self._db.run(write)
        except BaseException:
            self._budgets.dirty.update(name for name, _ in counters)
            raise

    async def rows(self, since: float | None = None, until: float | None = None, *,
                   after: tuple[float, str] | None = None,
                   limit: int | None = None) -> list[LedgerRow]:
        lo = -math.inf if since is None else since
        if after is not None:
            lo = max(lo, after[0])
        hi = math.inf if until is None else until

        def read(c: sqlite3.Connection) -> list[LedgerRow]:
            found: dict[str, LedgerRow] = {}  # by id: a row in two batches counts once
            for (blob,) in c.execute("SELECT rows FROM ledger_batches WHERE max_ts >= ? "
                                     "AND min_ts < ?", (lo, hi)):
                for r in _decode_batch(blob):
                    if lo <= r.ts < hi and (after is None or (r.ts, r.id) > after):
                        found[r.id] = r
            return sorted(found.values(), key=lambda r: (r.ts, r.id))[:limit]
        return await self._db.run(read)

    async def spend(self, by: str, since: float | None = None,
                    until: float | None = None) -> list[SpendRow]:
        return spend_of(await self.rows(since, until), by)

    async def charged(self, by: Sequence[str], day: float, month: float,
                      exclude: Callable[[], Awaitable[Collection[str]]]) -> list[Charged]:
        # (Never needed here: these budgets are persisted with the ledger. It keeps the
        # contract, so the shared store's SQL has a reference to agree with.)
        rows = await self.rows()
        return charged_of(rows, by, day, month, await exclude())


class EmbeddedStore:
    def __init__(self, path: str, cache_entries: int = 10_000) -> None:
        self._db = Db(Path(path) / "tollway.db", _SCHEMA)
        spent = dict(self._db.call(
            lambda c: c.execute("SELECT name, amount FROM counters").fetchall()))
        memory = MemoryBudgets(spent)
        self.budgets: BudgetStore = memory
        self.limits: LimitStore = MemoryLimits()
        self.fallback_limits: LimitStore = self.limits  # in memory: it cannot be down
        self.keys: KeyStore = SqliteKeys(self._db)
        self.ledger: LedgerStore = SqliteLedger(self._db, memory)
        self.once: OnceStore = MemoryOnce()
        self.cache: CacheStore = EmbeddedCache(self._db, cache_entries)
        self.conversations: ConversationStore = EmbeddedConversations(self._db)
        self.responses: ResponseStore = EmbeddedResponses(self._db)
        self.batches: BatchStore = EmbeddedBatches(self._db, Path(path) / "files")

    async def open(self) -> None:
        """Nothing to do: the database opened with the store (zero setup)."""

    async def health(self) -> dict[str, PartHealth]:
        return {}  # a local file: nothing to be unreachable

    async def close(self) -> None:
        await self.cache.close()
        self._db.close()
