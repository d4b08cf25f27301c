"""The embedded store: budgets and alert marks in memory, keys and the ledger in
SQLite. One process owns it (the server is the only writer; the CLI goes through
the admin API), so memory is the truth for budgets and a plain dict makes
reserve-and-settle atomic: no await happens between checking and taking.

SQLite work runs on one dedicated thread, off the event loop. Settled budget
amounts are persisted with the next ledger batch, in the same transaction, so a
restart resumes the current windows where they were (holds are not persisted: a
dead process's holds vanish with it, which is what expiry means here).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import msgspec

from tollway.accounting.ledger import LedgerRow, SpendRow, spend_of
from tollway.policy.keys import KeyRecord
from tollway.store.base import (
    BudgetStore,
    CacheStore,
    Claim,
    ConversationStore,
    KeyStore,
    LedgerStore,
    LimitStore,
    OnceStore,
    Reservation,
)
from tollway.store.embedded_cache import EmbeddedCache
from tollway.store.embedded_conversations import EmbeddedConversations

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
"""
_encode = msgspec.json.Encoder().encode
_decode_batch = msgspec.json.Decoder(list[LedgerRow]).decode


class _Db:
    """One SQLite connection used only from its own thread."""

    def __init__(self, path: Path) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollway-sqlite")
        self.conn: sqlite3.Connection = self._pool.submit(self._open, path).result()

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        return conn

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Synchronously (start-up only)."""
        return self._pool.submit(fn, self.conn).result()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self.conn)

    def close(self) -> None:
        self._pool.submit(self.conn.close).result()
        self._pool.shutdown()


class MemoryBudgets:
    # Recently settled hold ids, so a repeated settle is refused. A hold settles within
    # hold_seconds, so a bounded memory of them is enough.
    SETTLED_MEMORY = 50_000

    def __init__(self, spent: dict[str, float] | None = None) -> None:
        self._spent: dict[str, float] = spent or {}
        self._held: dict[str, float] = {}
        self._holds: dict[str, Sequence[Claim]] = {}
        self._expiry: list[tuple[float, str]] = []  # heap of (expires_at, hold id)
        self._settled: dict[str, None] = {}  # insertion-ordered: oldest first
        self.dirty: set[str] = set()  # counters changed since they were persisted

    async def reserve(self, hold_id: str, claims: Sequence[Claim], expires_at: float,
                      now: float) -> Reservation:
        self._expire(now)
        spent, held = self._spent, self._held
        levels = [spent.get(c.counter, 0.0) + held.get(c.counter, 0.0) for c in claims]
        if hold_id in self._settled:  # its request finished first: nothing to take
            return Reservation(levels)
        for i, (c, level) in enumerate(zip(claims, levels, strict=True)):
            if level + c.amount > c.limit * (1 + 1e-12):
                return Reservation(levels, refused=i)
        for c in claims:
            held[c.counter] = held.get(c.counter, 0.0) + c.amount
        self._holds[hold_id] = claims
        heapq.heappush(self._expiry, (expires_at, hold_id))
        return Reservation([lvl + c.amount for lvl, c in zip(levels, claims, strict=True)])

    async def settle(self, hold_id: str, charges: Sequence[tuple[str, float]]) -> bool:
        if hold_id in self._settled:
            return False
        self._settled[hold_id] = None
        if len(self._settled) > self.SETTLED_MEMORY:
            del self._settled[next(iter(self._settled))]
        hold = self._holds.pop(hold_id, None)
        if hold is not None:
            self._release(hold)
        for counter, amount in charges:
            if amount:
                self._spent[counter] = self._spent.get(counter, 0.0) + amount
                self.dirty.add(counter)
        return True

    async def levels(self, counters: Sequence[str], now: float) -> list[float]:
        self._expire(now)
        return [self._spent.get(c, 0.0) + self._held.get(c, 0.0) for c in counters]

    async def add(self, counter: str, amount: float) -> float:
        level = self._spent.get(counter, 0.0) + amount
        self._spent[counter] = level
        self.dirty.add(counter)
        return level

    def take_dirty(self) -> list[tuple[str, float]]:
        out = [(c, self._spent[c]) for c in self.dirty]
        self.dirty = set()
        return out

    def _release(self, claims: Sequence[Claim]) -> None:
        held = self._held
        for c in claims:
            left = held.get(c.counter, 0.0) - c.amount
            if left > 1e-12:
                held[c.counter] = left
            else:
                held.pop(c.counter, None)

    def _expire(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, hold_id = heapq.heappop(heap)
            hold = self._holds.pop(hold_id, None)
            if hold is not None:
                self._release(hold)


class _Entry:
    __slots__ = ("amount", "id", "t")

    def __init__(self, t: float, entry_id: str, amount: float) -> None:
        self.t = t
        self.id = entry_id
        self.amount = amount


class _Log:
    """One counter's window: its entries oldest first, their sum, and each by id
    (for adjust)."""

    __slots__ = ("by_id", "entries", "total", "window")

    def __init__(self, window: float) -> None:
        self.entries: deque[_Entry] = deque()
        self.by_id: dict[str, _Entry] = {}
        self.total = 0.0
        self.window = window

    def expire(self, now: float) -> None:
        # `t + window <= now`, the same sum free_at returns, so an entry leaves at
        # exactly the time we told the caller (now - window would round differently).
        entries, window = self.entries, self.window
        while entries and entries[0].t + window <= now:
            e = entries.popleft()
            self.total -= e.amount
            if self.by_id.get(e.id) is e:
                del self.by_id[e.id]
        if not entries:
            self.total = 0.0  # no float drift survives an empty window


class MemoryLimits:
    """Sliding-window logs in memory. Atomic for the same reason as MemoryBudgets: no
    await between checking and recording. Memory follows the traffic of one window:
    a counter drops its expired entries whenever it is used, and a sweep trims the
    others and drops the empty ones. The sweep walks every counter, so it runs only
    after `sweep_every` takes and after as many takes as there are counters (O(1) per
    take) or a window since the last one (at most one walk per window)."""

    def __init__(self, sweep_every: int = 1000) -> None:
        self._logs: dict[str, _Log] = {}
        self._sweep_every = sweep_every
        self._takes = 0
        self._swept_at = -math.inf

    async def take(self, entry_id: str, claims: Sequence[Claim], window: float,
                   now: float) -> Reservation:
        self._takes += 1
        if self._takes >= self._sweep_every and (
                self._takes >= len(self._logs) or now >= self._swept_at + window):
            self._sweep(now)
        logs = self._logs
        found: list[_Log] = []
        for c in claims:
            log = logs.get(c.counter)
            if log is None:
                log = logs[c.counter] = _Log(window)
            log.window = window
            log.expire(now)
            found.append(log)
        levels = [log.total for log in found]
        for i, (c, level) in enumerate(zip(claims, levels, strict=True)):
            if level + c.amount > c.limit * (1 + 1e-12):
                return Reservation(levels, refused=i)
        for c, log in zip(claims, found, strict=True):
            entries = log.entries
            # A caller that read its clock before an await may come in a little late:
            # recording it at the newest entry's time keeps each log sorted (and counts
            # it a moment longer, never shorter).
            e = _Entry(max(now, entries[-1].t) if entries else now, entry_id, c.amount)
            entries.append(e)
            log.by_id[entry_id] = e
            log.total += c.amount
        return Reservation([lvl + c.amount for lvl, c in zip(levels, claims, strict=True)])

    async def adjust(self, entry_id: str, amounts: Sequence[tuple[str, float]]) -> None:
        for counter, amount in amounts:
            log = self._logs.get(counter)
            e = log.by_id.get(entry_id) if log is not None else None
            if log is not None and e is not None:
                log.total += amount - e.amount
                e.amount = amount

    async def free_at(self, counter: str, need: float, limit: float, window: float,
                      now: float) -> float:
        if need > limit * (1 + 1e-12):
            return math.inf
        log = self._logs.get(counter)
        if log is None:
            return now
        log.window = window
        log.expire(now)
        excess = log.total + need - limit * (1 + 1e-12)
        if excess <= 0:
            return now
        for e in log.entries:  # capacity comes back as the oldest entries leave
            excess -= e.amount
            if excess <= 0:
                return e.t + window
        return math.inf  # unreachable while need <= limit

    def size(self) -> tuple[int, int]:
        """(counters, entries) held: what the memory bound is about."""
        return len(self._logs), sum(len(log.entries) for log in self._logs.values())

    def _sweep(self, now: float) -> None:
        self._takes = 0
        self._swept_at = now
        idle = []
        for name, log in self._logs.items():
            log.expire(now)
            if not log.entries:
                idle.append(name)
        for name in idle:
            del self._logs[name]


class SqliteKeys:
    """Keys in SQLite, served from memory (this process is the only writer)."""

    def __init__(self, db: _Db) -> None:
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


class SqliteLedger:
    def __init__(self, db: _Db, budgets: MemoryBudgets) -> None:
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
                c.execute("INSERT OR IGNORE INTO ledger_batches (id, min_ts, max_ts, rows) "
                          "VALUES (?, ?, ?, ?)", (batch_id, lo, hi, blob))
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


class MemoryOnce:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    async def first(self, name: str, until: float) -> bool:
        if name in self._until:
            return False
        self._until[name] = until
        return True


class EmbeddedStore:
    def __init__(self, path: str, cache_entries: int = 10_000) -> None:
        self._db = _Db(Path(path) / "tollway.db")
        spent = dict(self._db.call(
            lambda c: c.execute("SELECT name, amount FROM counters").fetchall()))
        memory = MemoryBudgets(spent)
        self.budgets: BudgetStore = memory
        self.limits: LimitStore = MemoryLimits()
        self.keys: KeyStore = SqliteKeys(self._db)
        self.ledger: LedgerStore = SqliteLedger(self._db, memory)
        self.once: OnceStore = MemoryOnce()
        self.cache: CacheStore = EmbeddedCache(self._db, cache_entries)
        self.conversations: ConversationStore = EmbeddedConversations(self._db)

    async def open(self) -> None:
        """Nothing to do: the database opened with the store (zero setup)."""

    async def close(self) -> None:
        self._db.close()
