"""The embedded batch store: file metadata, batches and their lines in SQLite, file
contents in a directory beside the database (`<store.path>/files/<id>`), so a 200 MB
upload is never a SQLite row.

A file's content is written to a temporary file off the store's thread (it may be
large), then renamed into place on that thread inside the transaction that inserts its
metadata: a reader never sees a half-written file, and an id already taken fails the
insert before anything is replaced. A crash can leave content without metadata (never
the reverse); `prune` sweeps such leftovers.

Every operation is one transaction. Claims and finishes take the write lock at their
start (BEGIN IMMEDIATE), so they are serialised even between processes sharing the file.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path

from tollway.store.base import (
    BATCH_ACTIVE,
    BATCH_ENDED,
    BatchLine,
    BatchRecord,
    BatchStatus,
    Cancelling,
    Finish,
    LineState,
    StoredFile,
    check_new_batch,
    check_new_file,
    line_end,
)
from tollway.store.batch_rows import (
    BATCH_COLUMNS,
    FILE_COLUMNS,
    LINE_COLUMNS,
    LIST_BATCHES,
    LIST_FILES,
    batch_of,
    batch_row,
    file_of,
    line_of,
    line_row,
)
from tollway.store.sqlite import Db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, purpose TEXT NOT NULL, filename TEXT NOT NULL,
    size INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS files_owner ON files (owner, created_at, id);
CREATE INDEX IF NOT EXISTS files_created ON files (created_at);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, total INTEGER NOT NULL, completed INTEGER NOT NULL,
    failed INTEGER NOT NULL, cancelled INTEGER NOT NULL, cost_pico INTEGER NOT NULL,
    hold_id TEXT, meta BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS batches_owner ON batches (owner, created_at, id);
CREATE INDEX IF NOT EXISTS batches_status ON batches (status, created_at, id);
CREATE TABLE IF NOT EXISTS batch_lines (
    batch_id TEXT NOT NULL, idx INTEGER NOT NULL, custom_id TEXT NOT NULL, body BLOB NOT NULL,
    state TEXT NOT NULL, result BLOB, cost_pico INTEGER NOT NULL, attempts INTEGER NOT NULL,
    claimed_by TEXT, lease_until REAL, PRIMARY KEY (batch_id, idx)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batch_lines_open ON batch_lines (batch_id, idx)
    WHERE state IN ('pending', 'running');
"""

_BATCH_MARKS = ", ".join("?" * len(BATCH_COLUMNS.split(", ")))
_LINE_MARKS = ", ".join("?" * len(LINE_COLUMNS.split(", ")))
_ACTIVE = ", ".join(f"'{s}'" for s in sorted(BATCH_ACTIVE))
_ENDED = ", ".join(f"'{s}'" for s in sorted(BATCH_ENDED))

# A batch's claimable lines in index order, read from its first open one (`state IN
# (...)` is the partial index's own term), so a claim never scans a whole batch.
_CLAIMABLE = f"""
SELECT {LINE_COLUMNS} FROM batch_lines INDEXED BY batch_lines_open
WHERE batch_id = ? AND state IN ('pending', 'running')
  AND (state = 'pending' OR lease_until <= ?)
ORDER BY idx LIMIT ?"""

# Settles a line, only while it runs under the worker.
_SETTLE = """
UPDATE batch_lines SET state = ?, result = ?, cost_pico = ?, claimed_by = NULL,
    lease_until = NULL
WHERE batch_id = ? AND idx = ? AND state = 'running' AND claimed_by = ?"""

# Adds settled lines (?1 completed, ?2 failed, ?3 cancelled) and their cost to a batch;
# the last one moves an in_progress batch to finalizing. SET reads the row as it was,
# RETURNING as it is now: true when this settled its last line (it was in_progress or
# cancelling: whoever did, finalizes it).
_COUNT = """
UPDATE batches SET completed = completed + ?1, failed = failed + ?2,
    cancelled = cancelled + ?3, cost_pico = cost_pico + ?4,
    status = CASE WHEN status = 'in_progress'
                   AND completed + failed + cancelled + ?1 + ?2 + ?3 >= total
              THEN 'finalizing' ELSE status END
WHERE id = ?5
RETURNING completed + failed + cancelled >= total
    AND completed + failed + cancelled - ?1 - ?2 - ?3 < total
    AND status IN ('finalizing', 'cancelling')"""

def _write_temp(directory: Path, content: bytes) -> Path:
    """Write (and sync) content to a new temporary file in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".tmp-{secrets.token_hex(8)}"
    try:
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:  # deleted since its metadata was read
        return None


class EmbeddedBatches:
    def __init__(self, db: Db, files: Path) -> None:
        self._db = db
        self._files = files
        db.call(lambda c: c.executescript(_SCHEMA))

    def _path(self, file_id: str) -> Path:
        return self._files / file_id  # (a plain name: check_new_file)

    # Files.

    async def put_file(self, file: StoredFile, content: bytes) -> None:
        check_new_file(file, content)
        final = self._path(file.id)
        tmp = await asyncio.to_thread(_write_temp, self._files, content)

        def write(c: sqlite3.Connection) -> None:
            with c:
                c.execute("BEGIN IMMEDIATE")
                c.execute(f"INSERT INTO files ({FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                          (file.owner, file.id, file.purpose, file.filename, file.size,
                           file.created_at))
                os.replace(tmp, final)
        try:
            await self._db.run(write)
        finally:
            tmp.unlink(missing_ok=True)  # (gone already unless the insert failed)

    async def get_file(self, owner: str, file_id: str) -> StoredFile | None:
        def read(c: sqlite3.Connection) -> StoredFile | None:
            row = c.execute(f"SELECT {FILE_COLUMNS} FROM files WHERE owner = ? AND id = ?",
                            (owner, file_id)).fetchone()
            return None if row is None else file_of(row)
        return await self._db.run(read)

    async def file_content(self, owner: str, file_id: str) -> bytes | None:
        if await self.get_file(owner, file_id) is None:
            return None
        return await asyncio.to_thread(_read, self._path(file_id))

    async def delete_file(self, owner: str, file_id: str) -> bool:
        def write(c: sqlite3.Connection) -> bool:
            with c:
                found = c.execute("DELETE FROM files WHERE owner = ? AND id = ?",
                                  (owner, file_id)).rowcount > 0
            if found:
                self._path(file_id).unlink(missing_ok=True)
            return found
        return await self._db.run(write)

    async def list_files(self, owner: str, purpose: str | None, after: str | None,
                         limit: int) -> list[StoredFile]:
        def read(c: sqlite3.Connection) -> list[StoredFile]:
            return [file_of(r) for r in c.execute(LIST_FILES,
                                                  (owner, after, limit, purpose))]
        return await self._db.run(read)

    # Batches.

    async def create_batch(self, batch: BatchRecord, lines: Sequence[BatchLine]) -> None:
        check_new_batch(batch, lines)
        rows = list(map(line_row, lines))

        def write(c: sqlite3.Connection) -> None:
            with c:
                c.execute("BEGIN IMMEDIATE")
                c.execute(f"INSERT INTO batches ({BATCH_COLUMNS}) VALUES ({_BATCH_MARKS})",
                          batch_row(batch))
                c.executemany(f"INSERT INTO batch_lines ({LINE_COLUMNS}) VALUES "
                              f"({_LINE_MARKS})", rows)
        await self._db.run(write)

    async def get_batch(self, owner: str, batch_id: str) -> BatchRecord | None:
        return await self._db.run(lambda c: _get_batch(c, owner, batch_id))

    async def list_batches(self, owner: str, after: str | None, limit: int,
                           prefix: str = "") -> list[BatchRecord]:
        def read(c: sqlite3.Connection) -> list[BatchRecord]:
            return [batch_of(r)
                    for r in c.execute(LIST_BATCHES, (owner, after, limit, prefix))]
        return await self._db.run(read)

    async def claim(self, worker: str, limit: int, lease_s: float, now: float,
                    only: str | None = None) -> list[BatchLine]:
        def write(c: sqlite3.Connection) -> list[BatchLine]:
            with c:
                c.execute("BEGIN IMMEDIATE")
                found: list[BatchLine] = []
                for (batch_id,) in c.execute("SELECT id FROM batches WHERE status = "
                                             "'in_progress' AND (? IS NULL OR id = ?) "
                                             "ORDER BY created_at, id", (only, only)
                                             ).fetchall():
                    if len(found) == limit:
                        break
                    found += map(line_of, c.execute(_CLAIMABLE,
                                                  (batch_id, now, limit - len(found))))
                c.executemany("UPDATE batch_lines SET state = 'running', claimed_by = ?, "
                              "lease_until = ?, attempts = attempts + 1 "
                              "WHERE batch_id = ? AND idx = ?",
                              [(worker, now + lease_s, ln.batch_id, ln.index)
                               for ln in found])
            return [BatchLine(ln.batch_id, ln.index, ln.custom_id, ln.body, "running",
                              ln.result, ln.cost_pico, ln.attempts + 1) for ln in found]
        return await self._db.run(write)

    async def finish(self, batch_id: str, index: int, worker: str, state: LineState,
                     result: bytes | None, cost_pico: int) -> Finish:
        adds = line_end(state)

        def write(c: sqlite3.Connection) -> Finish:
            with c:
                c.execute("BEGIN IMMEDIATE")
                if not c.execute(_SETTLE, (state, result, cost_pico, batch_id, index,
                                           worker)).rowcount:
                    return "refused"
                return "last" if _count(c, batch_id, adds, cost_pico) else "recorded"
        return await self._db.run(write)

    async def set_status(self, owner: str, batch_id: str, status: BatchStatus, *,
                         expect: Collection[str], meta: bytes | None = None) -> bool:
        marks = ",".join("?" * len(expect))

        def write(c: sqlite3.Connection) -> bool:
            with c:
                return c.execute(
                    f"UPDATE batches SET status = ?, meta = coalesce(?, meta) "
                    f"WHERE owner = ? AND id = ? AND status IN ({marks})",
                    (status, meta, owner, batch_id, *expect)).rowcount > 0
        return await self._db.run(write)

    async def cancel(self, owner: str, batch_id: str, *,
                     meta: bytes | None = None) -> Cancelling | None:
        def write(c: sqlite3.Connection) -> Cancelling | None:
            with c:
                c.execute("BEGIN IMMEDIATE")
                moved = c.execute(
                    "UPDATE batches SET status = 'cancelling', meta = coalesce(?, meta) "
                    "WHERE owner = ? AND id = ? AND status IN ('validating', 'in_progress')",
                    (meta, owner, batch_id)).rowcount > 0
                last = False
                if moved:
                    n = c.execute("UPDATE batch_lines SET state = 'cancelled' "
                                  "WHERE batch_id = ? AND state = 'pending'",
                                  (batch_id,)).rowcount
                    last = _count(c, batch_id, (0, 0, n), 0)
                batch = _get_batch(c, owner, batch_id)
            return None if batch is None else Cancelling(batch, last)
        return await self._db.run(write)

    async def cancel_stale(self, batch_id: str, now: float) -> bool:
        def write(c: sqlite3.Connection) -> bool:
            with c:
                c.execute("BEGIN IMMEDIATE")
                n = c.execute(
                    "UPDATE batch_lines SET state = 'cancelled', claimed_by = NULL, "
                    "lease_until = NULL WHERE batch_id = ? AND state = 'running' "
                    "AND lease_until <= ? AND EXISTS (SELECT 1 FROM batches WHERE id = ? "
                    "AND status = 'cancelling')", (batch_id, now, batch_id)).rowcount
                return n > 0 and _count(c, batch_id, (0, 0, n), 0)
        return await self._db.run(write)

    async def lines(self, batch_id: str, after_index: int, limit: int) -> list[BatchLine]:
        def read(c: sqlite3.Connection) -> list[BatchLine]:
            return [line_of(r) for r in c.execute(
                f"SELECT {LINE_COLUMNS} FROM batch_lines WHERE batch_id = ? AND idx > ? "
                "ORDER BY idx LIMIT ?", (batch_id, after_index, limit))]
        return await self._db.run(read)

    async def active(self, limit: int) -> list[BatchRecord]:
        def read(c: sqlite3.Connection) -> list[BatchRecord]:
            return [batch_of(r) for r in c.execute(
                f"SELECT {BATCH_COLUMNS} FROM batches WHERE status IN ({_ACTIVE}) "
                "ORDER BY created_at, id LIMIT ?", (limit,))]
        return await self._db.run(read)

    async def prune(self, before: float) -> int:
        def write(c: sqlite3.Connection) -> tuple[int, list[str]]:
            with c:
                c.execute("BEGIN IMMEDIATE")
                gone = c.execute(f"SELECT id FROM batches WHERE status IN ({_ENDED}) "
                                 "AND created_at < ?", (before,)).fetchall()
                c.executemany("DELETE FROM batch_lines WHERE batch_id = ?", gone)
                c.executemany("DELETE FROM batches WHERE id = ?", gone)
                files = [f for (f,) in c.execute(
                    "DELETE FROM files WHERE created_at < ? AND id NOT IN "
                    "(SELECT input_file_id FROM batches) RETURNING id", (before,))]
            if gone or files:  # the log still held the deleted lines as written
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            return len(gone), files
        n, files = await self._db.run(write)
        await asyncio.to_thread(self._sweep, files, before)
        return n

    def _sweep(self, deleted: list[str], before: float) -> None:
        """Remove the contents of deleted files, and leftovers older than `before`
        that no file owns (a crash between writing and recording, or deleting)."""
        for file_id in deleted:
            self._path(file_id).unlink(missing_ok=True)
        if not self._files.is_dir():
            return
        known = set(self._db.call(lambda c: [f for (f,) in c.execute("SELECT id FROM files")]))
        for path in self._files.iterdir():
            try:
                if path.name not in known and path.stat().st_mtime < before:
                    path.unlink()
            except FileNotFoundError:  # a temporary file renamed meanwhile
                pass


def _get_batch(c: sqlite3.Connection, owner: str, batch_id: str) -> BatchRecord | None:
    row = c.execute(f"SELECT {BATCH_COLUMNS} FROM batches WHERE owner = ? AND id = ?",
                    (owner, batch_id)).fetchone()
    return None if row is None else batch_of(row)


def _count(c: sqlite3.Connection, batch_id: str, adds: tuple[int, int, int],
           cost_pico: int) -> bool:
    """Add settled lines to the batch (_COUNT); whether they were its last."""
    if not any(adds):
        return False
    return bool(c.execute(_COUNT, (*adds, cost_pico, batch_id)).fetchone()[0])
