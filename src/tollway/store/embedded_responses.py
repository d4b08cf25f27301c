"""The embedded response store: Responses API responses in SQLite, one row each, on
the store's own thread. A deletion is for good, as for conversations: secure_delete is
on for the connection (embedded_conversations.py), and a checkpoint right after empties
the write-ahead log, which still held the response as written."""

from __future__ import annotations

import sqlite3

from tollway.store.base import StoredResponse
from tollway.store.sqlite import Db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    owner TEXT NOT NULL, id TEXT NOT NULL, created_at REAL NOT NULL,
    response BLOB NOT NULL, input_items BLOB NOT NULL, PRIMARY KEY (owner, id));
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at);
"""


class EmbeddedResponses:
    def __init__(self, db: Db) -> None:
        self._db = db
        db.call(lambda c: c.executescript(_SCHEMA))

    async def put(self, response: StoredResponse) -> None:
        r = response
        await self._db.run(lambda c: c.execute(
            "INSERT OR REPLACE INTO responses (owner, id, created_at, response, input_items) "
            "VALUES (?, ?, ?, ?, ?)", (r.owner, r.id, r.created_at, r.response, r.input_items)))

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        def read(c: sqlite3.Connection) -> StoredResponse | None:
            row = c.execute("SELECT created_at, response, input_items FROM responses "
                            "WHERE owner = ? AND id = ?", (owner, response_id)).fetchone()
            if row is None:
                return None
            return StoredResponse(owner, response_id, row[0], bytes(row[1]), bytes(row[2]))
        return await self._db.run(read)

    async def delete(self, owner: str, response_id: str) -> bool:
        def write(c: sqlite3.Connection) -> bool:
            with c:
                found = c.execute("DELETE FROM responses WHERE owner = ? AND id = ?",
                                  (owner, response_id)).rowcount > 0
            if found:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            return found
        return await self._db.run(write)

    async def prune(self, before: float) -> int:
        def write(c: sqlite3.Connection) -> int:
            with c:
                gone = c.execute("DELETE FROM responses WHERE created_at < ?",
                                 (before,)).rowcount
            if gone:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            return int(gone)
        return await self._db.run(write)
