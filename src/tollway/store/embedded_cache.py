"""The embedded cache store: memory in front, SQLite behind so a restart keeps the
cache. Reads are dict lookups on the event loop; writes reach SQLite on the store's
own thread (the cache writes after the answer has been sent)."""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from tollway.store.sqlite import Db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (key TEXT PRIMARY KEY, value BLOB NOT NULL,
                                          expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cache_logs (part TEXT NOT NULL, seq INTEGER NOT NULL,
                                       entry BLOB NOT NULL, expires REAL NOT NULL,
                                       PRIMARY KEY (part, seq));
"""


@dataclass(slots=True)
class _Log:
    base: int = 0  # the sequence number of items[0]
    items: list[bytes] = field(default_factory=list)
    expires: float = 0.0


class EmbeddedCache:
    def __init__(self, db: Db, max_entries: int) -> None:
        self._db = db
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._logs: dict[str, _Log] = {}
        now = time.time()

        def load(c: sqlite3.Connection) -> tuple[list[tuple[str, bytes, float]],
                                                  list[tuple[str, int, bytes, float]]]:
            c.executescript(_SCHEMA)
            c.execute("DELETE FROM cache_entries WHERE expires <= ?", (now,))
            c.execute("DELETE FROM cache_logs WHERE expires <= ?", (now,))
            entries = c.execute("SELECT key, value, expires FROM cache_entries "
                                "ORDER BY expires DESC LIMIT ?", (max_entries,)).fetchall()
            logs = c.execute("SELECT part, seq, entry, expires FROM cache_logs "
                             "ORDER BY part, seq").fetchall()
            return entries, logs

        entries, logs = db.call(load)
        for key, value, expires in reversed(entries):
            self._entries[key] = (value, expires)
        for part, seq, entry, expires in logs:
            log = self._logs.get(part)
            if log is None:
                log = self._logs[part] = _Log(base=seq)
            log.items.append(entry)
            log.expires = max(log.expires, expires)

    async def close(self) -> None:
        """Nothing of its own: the store closes the database."""

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[1] <= time.time():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found[0]

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        expires = time.time() + ttl
        self._entries[key] = (value, expires)
        self._entries.move_to_end(key)
        evicted = []
        while len(self._entries) > self._max:
            evicted.append(self._entries.popitem(last=False)[0])

        def write(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO cache_entries VALUES (?, ?, ?)",
                      (key, value, expires))
            if evicted:
                c.executemany("DELETE FROM cache_entries WHERE key = ?",
                              [(k,) for k in evicted])

        await self._db.run(write)

    async def append(self, partition: str, entry: bytes, ttl: float, max_entries: int
                     ) -> None:
        now = time.time()
        log = self._logs.get(partition)
        if log is None or log.expires <= now:
            log = self._logs[partition] = _Log(base=log.base + len(log.items) if log else 0)
        seq = log.base + len(log.items)
        log.items.append(entry)
        log.expires = now + ttl
        drop = len(log.items) - max_entries
        if drop > 0:
            del log.items[:drop]
            log.base += drop
        first = log.base

        def write(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO cache_logs VALUES (?, ?, ?, ?)",
                      (partition, seq, entry, now + ttl))
            if drop > 0:
                c.execute("DELETE FROM cache_logs WHERE part = ? AND seq < ?", (partition, first))

        await self._db.run(write)

    async def read(self, partition: str, cursor: str) -> tuple[list[bytes], str]:
        log = self._logs.get(partition)
        if log is None:
            return [], cursor
        after = int(cursor) if cursor else 0
        start = max(0, after - log.base)
        return log.items[start:], str(log.base + len(log.items))
