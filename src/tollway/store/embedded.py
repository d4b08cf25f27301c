"""The embedded store: budgets and alert marks in memory, keys and the ledger in
SQLite (the ledger as embedded_ledger.py files it; uploaded files beside it,
embedded_batches.py). One process owns it (the
server is the only writer; the CLI goes through the admin API), so memory is the truth
for budgets and a plain dict makes reserve-and-settle atomic: no await happens between
checking and taking.

SQLite work runs on one dedicated thread, off the event loop. Settled budget
amounts are persisted with the next ledger batch, in the same transaction, so a
restart resumes the current windows where they were (holds are not persisted: a
dead process's holds vanish with it, which is what expiry means here).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from tollway.keys import KeyRecord
from tollway.store.base import (
    AlertStore,
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
from tollway.store.dashboard import DashboardStore
from tollway.store.embedded_alerts import ALERTS_SCHEMA, EmbeddedAlerts
from tollway.store.embedded_batches import EmbeddedBatches
from tollway.store.embedded_cache import EmbeddedCache
from tollway.store.embedded_conversations import EmbeddedConversations
from tollway.store.embedded_dashboard import EmbeddedDashboard
from tollway.store.embedded_ledger import LEDGER_SCHEMA, SqliteLedger
from tollway.store.embedded_responses import EmbeddedResponses
from tollway.store.memory import MemoryBudgets, MemoryLimits, MemoryOnce
from tollway.store.sqlite import Db

_SCHEMA = LEDGER_SCHEMA + ALERTS_SCHEMA + """
CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, hash TEXT UNIQUE, record BLOB);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, amount REAL NOT NULL);
"""


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
        ledger = SqliteLedger(self._db, memory)
        self.ledger: LedgerStore = ledger
        self.dashboard: DashboardStore = EmbeddedDashboard(ledger)
        self.alerts: AlertStore = EmbeddedAlerts(self._db)
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
