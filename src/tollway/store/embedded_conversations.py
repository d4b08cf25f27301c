"""The embedded conversation store: conversations, their turns and their summaries in
SQLite, nothing kept in memory (a conversation is read once per request, and SQLite's
page cache serves it). Every operation is one call on the store's own thread, so
appends to one conversation are serialised by that thread, each in its own transaction.

A deletion is for good: secure_delete overwrites deleted content, and a checkpoint
right after moves those overwritten pages into the database file and empties the
write-ahead log, which still held the content as it was written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from tollway.store.base import ConversationInfo, StoredConversation
from tollway.store.sqlite import Db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    owner TEXT NOT NULL, id TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    system BLOB, turns INTEGER NOT NULL, tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
    PRIMARY KEY (owner, id));
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (owner, updated_at);
CREATE INDEX IF NOT EXISTS conversations_idle ON conversations (updated_at);
CREATE TABLE IF NOT EXISTS conversation_turns (
    owner TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, message BLOB NOT NULL,
    PRIMARY KEY (owner, id, seq));
CREATE TABLE IF NOT EXISTS conversation_summaries (
    owner TEXT NOT NULL, prefix TEXT NOT NULL, conversation TEXT, summary BLOB NOT NULL,
    created_at REAL NOT NULL, PRIMARY KEY (owner, prefix));
CREATE INDEX IF NOT EXISTS conversation_summaries_conversation
    ON conversation_summaries (owner, conversation);
CREATE INDEX IF NOT EXISTS conversation_summaries_created
    ON conversation_summaries (created_at);
"""

_INFO = "owner, id, created_at, updated_at, turns, tokens, cost_usd"

# Creates the conversation or adds to it, and returns the new turn count, from which
# the appended turns' sequence numbers follow.
_UPSERT = """
INSERT INTO conversations (owner, id, created_at, updated_at, system, turns, tokens, cost_usd)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (owner, id) DO UPDATE SET updated_at = excluded.updated_at,
    system = coalesce(excluded.system, system), turns = turns + excluded.turns,
    tokens = tokens + excluded.tokens, cost_usd = cost_usd + excluded.cost_usd
RETURNING turns"""


def _setup(c: sqlite3.Connection) -> None:
    # Per connection, and this is the store's only one: deleted rows (and the pages
    # they free) are overwritten with zeros rather than left on disk until reused, so
    # a deleted conversation's text cannot be read back out of the file.
    c.execute("PRAGMA secure_delete=ON")
    c.executescript(_SCHEMA)


def _info(row: tuple[str, str, float, float, int, int, float]) -> ConversationInfo:
    owner, conv, created_at, updated_at, turns, tokens, cost_usd = row
    return ConversationInfo(owner=owner, id=conv, created_at=created_at,
                            updated_at=updated_at, turns=turns, tokens=tokens,
                            cost_usd=cost_usd)


class EmbeddedConversations:
    def __init__(self, db: Db) -> None:
        self._db = db
        db.call(_setup)

    async def load(self, owner: str, conversation: str) -> StoredConversation | None:
        def read(c: sqlite3.Connection) -> StoredConversation | None:
            # No transaction needed: nothing else writes between these two reads (this
            # thread is the connection's only user).
            row = c.execute(f"SELECT {_INFO}, system FROM conversations "
                            "WHERE owner = ? AND id = ?", (owner, conversation)).fetchone()
            if row is None:
                return None
            turns = c.execute("SELECT message FROM conversation_turns WHERE owner = ? "
                              "AND id = ? ORDER BY seq", (owner, conversation)).fetchall()
            return StoredConversation(info=_info(row[:7]), system=row[7],
                                      turns=[t for (t,) in turns])
        return await self._db.run(read)

    async def append(self, owner: str, conversation: str, system: bytes | None,
                     turns: Sequence[bytes], tokens: int, cost_usd: float,
                     now: float) -> int:
        def write(c: sqlite3.Connection) -> int:
            with c:
                c.execute("BEGIN IMMEDIATE")
                (stored,) = c.execute(_UPSERT, (owner, conversation, now, now, system,
                                                len(turns), tokens, cost_usd)).fetchone()
                first = stored - len(turns)
                c.executemany("INSERT INTO conversation_turns (owner, id, seq, message) "
                              "VALUES (?, ?, ?, ?)",
                              [(owner, conversation, first + i, t) for i, t in enumerate(turns)])
            return int(stored)
        return await self._db.run(write)

    async def list(self, owner: str | None, limit: int) -> list[ConversationInfo]:
        where, args = ("WHERE owner = ? ", (owner, limit)) if owner is not None else ("", (limit,))

        def read(c: sqlite3.Connection) -> list[ConversationInfo]:
            return [_info(r) for r in c.execute(
                f"SELECT {_INFO} FROM conversations {where}"
                "ORDER BY updated_at DESC, id, owner LIMIT ?", args)]
        return await self._db.run(read)

    async def delete(self, owner: str, conversation: str) -> bool:
        def write(c: sqlite3.Connection) -> bool:
            key = (owner, conversation)
            with c:
                c.execute("BEGIN IMMEDIATE")
                found = c.execute("DELETE FROM conversations WHERE owner = ? AND id = ?",
                                  key).rowcount > 0
                c.execute("DELETE FROM conversation_turns WHERE owner = ? AND id = ?", key)
                c.execute("DELETE FROM conversation_summaries WHERE owner = ? "
                          "AND conversation = ?", key)
            # The log still holds the deleted rows as they were written (it is reused
            # from its start after a checkpoint, not cleared): copy the zeroed pages
            # into the file and truncate it. Deletions are rare; this costs a few ms.
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            return found
        return await self._db.run(write)

    async def prune(self, before: float) -> int:
        def write(c: sqlite3.Connection) -> int:
            with c:
                c.execute("BEGIN IMMEDIATE")
                gone = c.execute("SELECT owner, id FROM conversations WHERE updated_at < ?",
                                 (before,)).fetchall()
                c.executemany("DELETE FROM conversation_turns WHERE owner = ? AND id = ?",
                              gone)
                c.executemany("DELETE FROM conversation_summaries WHERE owner = ? "
                              "AND conversation = ?", gone)
                c.execute("DELETE FROM conversations WHERE updated_at < ?", (before,))
                dropped = c.execute("DELETE FROM conversation_summaries WHERE created_at < ?",
                                    (before,)).rowcount
            if gone or dropped:  # as for a delete: the log held them as written
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            return len(gone)
        return await self._db.run(write)

    async def summary(self, owner: str, prefixes: Sequence[str]) -> tuple[str, bytes] | None:
        if not prefixes:
            return None
        marks = ",".join("?" * len(prefixes))

        def read(c: sqlite3.Connection) -> tuple[str, bytes] | None:
            found = dict(c.execute(f"SELECT prefix, summary FROM conversation_summaries "
                                   f"WHERE owner = ? AND prefix IN ({marks})",
                                   (owner, *prefixes)))
            return next(((p, found[p]) for p in prefixes if p in found), None)
        return await self._db.run(read)

    async def put_summary(self, owner: str, prefix: str, conversation: str | None,
                          summary: bytes, now: float) -> None:
        await self._db.run(lambda c: c.execute(
            "INSERT INTO conversation_summaries (owner, prefix, conversation, summary, "
            "created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (owner, prefix) DO UPDATE SET "
            "conversation = excluded.conversation, summary = excluded.summary, "
            "created_at = excluded.created_at", (owner, prefix, conversation, summary, now)))
