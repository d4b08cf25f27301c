"""The PostgreSQL batch store, shared by every replica: files (their content a bytea
column), batches, and their lines, which any replica claims.

A claim is one statement: it picks the lines with `FOR UPDATE SKIP LOCKED` (lines
another claimer is taking are passed over, not waited for, and a line a committed claim
took is re-checked and left) and marks them running under the claimer. A finish is one
statement too: the line is settled only while it runs under the worker, and its batch's
counters follow in the same statement, so concurrent finishes queue on the batch's row
and exactly one of them sees its last line settle.

No two of these deadlock: a claim waits for no lock; a finish and `cancel_stale` lock
running lines, then the batch; `cancel` locks the batch, then pending lines, which only
a claim (that waits for nothing) may hold.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

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
    LINE_COLUMN_NAMES,
    LINE_COLUMNS,
    LIST_BATCHES,
    LIST_FILES,
    batch_of,
    batch_row,
    file_of,
    line_of,
    line_row,
)
from tollway.store.postgres_conversations import Pooled

_GET_BATCH = f"SELECT {BATCH_COLUMNS} FROM batches WHERE owner = $1 AND id = $2"

_LIST_FILES = LIST_FILES.replace("?", "$")
_LIST_BATCHES = LIST_BATCHES.replace("?", "$")

# Batch by batch, oldest first, each batch's claimable lines in index order, locked as
# they are read: a lock is taken only on a line returned, the lines of the batches after
# are not read once there are enough, and a batch's lines are read from its first open
# one (`state IN (...)` is the partial index's own term), so claiming never sorts or
# scans a whole batch. The LIMIT inside the LATERAL keeps it a nested loop, which keeps
# the batches' order. RETURNING gives no order: the batch's created_at comes back to
# sort by.
_CLAIM = f"""
WITH picked AS (
    SELECT l.batch_id, l.idx, b.created_at
    FROM (SELECT id, created_at FROM batches WHERE status = 'in_progress'
          AND ($5::text IS NULL OR id = $5) ORDER BY created_at, id) b
    CROSS JOIN LATERAL (
        SELECT batch_id, idx FROM batch_lines
        WHERE batch_id = b.id AND state IN ('pending', 'running')
          AND (state = 'pending' OR lease_until <= $4)
        ORDER BY idx LIMIT $2
        FOR UPDATE SKIP LOCKED) l
    LIMIT $2)
UPDATE batch_lines l SET state = 'running', claimed_by = $1, lease_until = $4 + $3,
    attempts = l.attempts + 1
FROM picked WHERE l.batch_id = picked.batch_id AND l.idx = picked.idx
RETURNING picked.created_at, {", ".join(f"l.{c}" for c in LINE_COLUMN_NAMES)}"""

# Adds the lines a statement settled (`d`, one row of their counts and cost) to batch
# $1; the last one moves an in_progress batch to finalizing. SET reads the row as it
# was, RETURNING as it is now: `last` when this settled its last line (it was
# in_progress or cancelling: whoever did, finalizes it).
_COUNT = """
UPDATE batches b SET completed = b.completed + d.completed, failed = b.failed + d.failed,
    cancelled = b.cancelled + d.cancelled, cost_pico = b.cost_pico + d.cost_pico,
    status = CASE WHEN b.status = 'in_progress' AND b.completed + b.failed + b.cancelled
                       + d.completed + d.failed + d.cancelled >= b.total
              THEN 'finalizing' ELSE b.status END
FROM d
WHERE b.id = $1 AND d.completed + d.failed + d.cancelled > 0
RETURNING b.completed + b.failed + b.cancelled >= b.total
    AND b.completed + b.failed + b.cancelled - d.completed - d.failed - d.cancelled < b.total
    AND b.status IN ('finalizing', 'cancelling') AS last"""

# $2-$4: what the line adds to completed, failed, cancelled; $5 its cost.
_FINISH = """
WITH d AS (
    UPDATE batch_lines SET state = $6, result = $7, cost_pico = $5, claimed_by = NULL,
        lease_until = NULL
    WHERE batch_id = $1 AND idx = $8 AND state = 'running' AND claimed_by = $9
    RETURNING $2::int AS completed, $3::int AS failed, $4::int AS cancelled,
        $5::bigint AS cost_pico)""" + _COUNT


def _cancel_lines(which: str) -> str:
    """Cancel the lines of batch $1 that `which` picks, and count them."""
    return f"""
WITH gone AS (
    UPDATE batch_lines SET state = 'cancelled', claimed_by = NULL, lease_until = NULL
    WHERE batch_id = $1 AND {which}
    RETURNING 1),
d AS (SELECT 0 AS completed, 0 AS failed, count(*)::int AS cancelled, 0::bigint AS cost_pico
      FROM gone)""" + _COUNT


_CANCEL_PENDING = _cancel_lines("state = 'pending'")
# The running lines of a cancelling batch whose worker died ($2: now).
_CANCEL_STALE = _cancel_lines(
    "state = 'running' AND lease_until <= $2 "
    "AND EXISTS (SELECT 1 FROM batches WHERE id = $1 AND status = 'cancelling')")

_ACTIVE = list(BATCH_ACTIVE)
_ENDED = list(BATCH_ENDED)


def _count_of(status: str) -> int:
    return int(status.rsplit(" ", 1)[1])  # "UPDATE <count>", "DELETE <count>"


class PostgresBatches:
    def __init__(self, store: Pooled) -> None:
        self._store = store

    # Files.

    async def put_file(self, file: StoredFile, content: bytes) -> None:
        check_new_file(file, content)
        f = file
        await self._store.pool.execute(
            f"INSERT INTO files ({FILE_COLUMNS}, content) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            f.owner, f.id, f.purpose, f.filename, f.size, f.created_at, content)

    async def get_file(self, owner: str, file_id: str) -> StoredFile | None:
        row = await self._store.pool.fetchrow(
            f"SELECT {FILE_COLUMNS} FROM files WHERE owner = $1 AND id = $2", owner, file_id)
        return None if row is None else file_of(row)

    async def file_content(self, owner: str, file_id: str) -> bytes | None:
        found: bytes | None = await self._store.pool.fetchval(
            "SELECT content FROM files WHERE owner = $1 AND id = $2", owner, file_id)
        return found

    async def delete_file(self, owner: str, file_id: str) -> bool:
        status = await self._store.pool.execute(
            "DELETE FROM files WHERE owner = $1 AND id = $2", owner, file_id)
        return _count_of(status) > 0

    async def list_files(self, owner: str, purpose: str | None, after: str | None,
                         limit: int) -> list[StoredFile]:
        rows = await self._store.pool.fetch(_LIST_FILES, owner, after, limit, purpose)
        return [file_of(r) for r in rows]

    # Batches.

    async def create_batch(self, batch: BatchRecord, lines: Sequence[BatchLine]) -> None:
        check_new_batch(batch, lines)
        values = batch_row(batch)
        marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        async with self._store.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"INSERT INTO batches ({BATCH_COLUMNS}) VALUES ({marks})",
                               *values)
            await conn.copy_records_to_table("batch_lines", columns=LINE_COLUMN_NAMES,
                                             records=map(line_row, lines))

    async def get_batch(self, owner: str, batch_id: str) -> BatchRecord | None:
        row = await self._store.pool.fetchrow(_GET_BATCH, owner, batch_id)
        return None if row is None else batch_of(row)

    async def list_batches(self, owner: str, after: str | None, limit: int,
                           prefix: str = "") -> list[BatchRecord]:
        rows = await self._store.pool.fetch(_LIST_BATCHES, owner, after, limit, prefix)
        return [batch_of(r) for r in rows]

    async def claim(self, worker: str, limit: int, lease_s: float, now: float,
                    only: str | None = None) -> list[BatchLine]:
        rows = await self._store.pool.fetch(_CLAIM, worker, limit, lease_s, now, only)
        rows.sort(key=lambda r: (r["created_at"], r["batch_id"], r["idx"]))
        return [line_of(tuple(r)[1:]) for r in rows]

    async def finish(self, batch_id: str, index: int, worker: str, state: LineState,
                     result: bytes | None, cost_pico: int) -> Finish:
        adds = line_end(state)
        row = await self._store.pool.fetchrow(_FINISH, batch_id, *adds, cost_pico, state,
                                              result, index, worker)
        if row is None:
            return "refused"
        return "last" if row["last"] else "recorded"

    async def set_status(self, owner: str, batch_id: str, status: BatchStatus, *,
                         expect: Collection[str], meta: bytes | None = None) -> bool:
        done = await self._store.pool.execute(
            "UPDATE batches SET status = $3, meta = coalesce($4, meta) "
            "WHERE owner = $1 AND id = $2 AND status = ANY($5::text[])",
            owner, batch_id, status, meta, list(expect))
        return _count_of(done) > 0

    async def cancel(self, owner: str, batch_id: str, *,
                     meta: bytes | None = None) -> Cancelling | None:
        async with self._store.pool.acquire() as conn, conn.transaction():
            moved = await conn.fetchval(
                "UPDATE batches SET status = 'cancelling', meta = coalesce($3, meta) "
                "WHERE owner = $1 AND id = $2 AND status IN ('validating', 'in_progress') "
                "RETURNING true", owner, batch_id, meta)
            last = moved and await conn.fetchval(_CANCEL_PENDING, batch_id)
            row = await conn.fetchrow(_GET_BATCH, owner, batch_id)
        return None if row is None else Cancelling(batch_of(row), bool(last))

    async def cancel_stale(self, batch_id: str, now: float) -> bool:
        return bool(await self._store.pool.fetchval(_CANCEL_STALE, batch_id, now))

    async def lines(self, batch_id: str, after_index: int, limit: int) -> list[BatchLine]:
        rows = await self._store.pool.fetch(
            f"SELECT {LINE_COLUMNS} FROM batch_lines WHERE batch_id = $1 AND idx > $2 "
            "ORDER BY idx LIMIT $3", batch_id, after_index, limit)
        return [line_of(r) for r in rows]

    async def active(self, limit: int) -> list[BatchRecord]:
        rows = await self._store.pool.fetch(
            f"SELECT {BATCH_COLUMNS} FROM batches WHERE status = ANY($1::text[]) "
            "ORDER BY created_at, id LIMIT $2", _ACTIVE, limit)
        return [batch_of(r) for r in rows]

    async def prune(self, before: float) -> int:
        async with self._store.pool.acquire() as conn, conn.transaction():
            gone = await conn.fetch(
                "DELETE FROM batches WHERE status = ANY($1::text[]) AND created_at < $2 "
                "RETURNING id", _ENDED, before)
            ids = [r["id"] for r in gone]
            await conn.execute("DELETE FROM batch_lines WHERE batch_id = ANY($1::text[])",
                               ids)
            await conn.execute(
                "DELETE FROM files f WHERE created_at < $1 AND NOT EXISTS "
                "(SELECT 1 FROM batches b WHERE b.input_file_id = f.id)", before)
        return len(ids)
