"""The embedded store's ledger, in SQLite: written as batches, read through an index.

A flush is one small INSERT of the batch (its rows as one JSON array): the writer
thread takes the GIL once and SQLite does no per-row work (row by row, or expanding a
JSON array in SQL, cost the gateway 15-20% of its throughput on two cores). Reads
first *file* the batches written since the last read into `ledger_rows`: a row each,
with the fields reports group and filter on (as their group labels), clustered by
time, indexed as the dashboard filters, and where the row itself is (its batch and
place in it). Reports are then SQL over that index, like PostgreSQL's, and a page of
rows decodes only the batches it needs. Filing costs the reads, not the request path:
a dashboard that is watched files a few seconds of rows a call; the first read after
a long quiet files everything since (bench/dashboard.py measures it).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from typing import TypeVar

import msgspec

from tollway.accounting.rows import (
    FAILED_OUTCOMES,
    GROUP_OF,
    Charged,
    LedgerRow,
    SpendRow,
    charged_of,
    served_model,
    spend_of,
)
from tollway.store.embedded_daily import add_days
from tollway.store.memory import MemoryBudgets
from tollway.store.sqlite import Db

T = TypeVar("T")

# `ledger_rows`: `failed` is rows.FAILED_OUTCOMES; `cache` the cache's answer (hit |
# semantic-hit | miss | bypass); `batch` and `pos` where the row is. A ledger from
# before the index has every batch still to file.
LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_batches (
    id TEXT PRIMARY KEY, min_ts REAL NOT NULL, max_ts REAL NOT NULL, rows BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_lines (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS ledger_rows (
    ts REAL NOT NULL, id TEXT NOT NULL, status INTEGER NOT NULL, failed INTEGER NOT NULL,
    model TEXT NOT NULL, key TEXT NOT NULL, user TEXT NOT NULL, team TEXT NOT NULL,
    feature TEXT NOT NULL, cost_usd REAL NOT NULL, saved_usd REAL NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, latency_ms REAL NOT NULL,
    ttft_ms REAL, cache TEXT, batch TEXT NOT NULL, pos INTEGER NOT NULL,
    PRIMARY KEY (ts, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_rows_key ON ledger_rows (key, ts, id);
CREATE INDEX IF NOT EXISTS ledger_rows_model ON ledger_rows (model, ts, id);
CREATE INDEX IF NOT EXISTS ledger_rows_failed ON ledger_rows (failed, ts, id);
CREATE TABLE IF NOT EXISTS ledger_unfiled (id TEXT PRIMARY KEY);
INSERT OR IGNORE INTO ledger_unfiled
    SELECT id FROM ledger_batches WHERE NOT EXISTS (SELECT 1 FROM ledger_rows);
CREATE TABLE IF NOT EXISTS dash_totals (
    key TEXT NOT NULL, day INTEGER NOT NULL, requests INTEGER NOT NULL,
    errors INTEGER NOT NULL, cache_hits INTEGER NOT NULL, cache_lookups INTEGER NOT NULL,
    saved_usd REAL NOT NULL, cost_usd REAL NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, PRIMARY KEY (key, day)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dash_groups (
    key TEXT NOT NULL, dim TEXT NOT NULL, day INTEGER NOT NULL, name TEXT NOT NULL,
    cost_usd REAL NOT NULL, requests INTEGER NOT NULL,
    PRIMARY KEY (key, dim, day, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dash_bins (
    key TEXT NOT NULL, metric INTEGER NOT NULL, day INTEGER NOT NULL, bin INTEGER NOT NULL,
    rows INTEGER NOT NULL, PRIMARY KEY (key, metric, day, bin)) WITHOUT ROWID;
-- One row once the daily totals hold every filed row (a ledger from before them is
-- totalled once, at open).
CREATE TABLE IF NOT EXISTS dash_ready (at REAL NOT NULL);
"""
_FILE_ROW = ("INSERT OR IGNORE INTO ledger_rows VALUES "
             "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
FILE_CHUNK = 20  # batches filed per transaction (a flush's batch is up to 5,000 rows)
BATCHES_READ = 500  # batches fetched per statement when rows are read back

_encode = msgspec.json.Encoder().encode
_decode_batch = msgspec.json.Decoder(list[LedgerRow]).decode
_key, _user, _team, _feature = (GROUP_OF[g] for g in ("key", "user", "team", "feature"))
_model = served_model
_FAILED = frozenset(FAILED_OUTCOMES)


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


def _filed(batch: str, rows: list[LedgerRow]) -> Iterator[tuple[object, ...]]:
    for pos, r in enumerate(rows):
        yield (r.ts, r.id, r.status, r.outcome in _FAILED, _model(r), _key(r), _user(r),
               _team(r), _feature(r), r.cost_usd, r.saved_usd, r.input_tokens,
               r.output_tokens, r.latency_ms, r.ttft_ms, r.cache, batch, pos)


def _file_rows(c: sqlite3.Connection, batch: str, rows: list[LedgerRow]) -> list[LedgerRow]:
    """Insert a batch's rows into `ledger_rows`; those that were not there already."""
    if c.executemany(_FILE_ROW, _filed(batch, rows)).rowcount == len(rows):
        return rows
    # Some were (a ledger filed before the batch lines were kept apart): which, by key.
    return [r for pos, r in enumerate(rows) if c.execute(
        "SELECT batch = ? AND pos = ? FROM ledger_rows WHERE ts = ? AND id = ?",
        (batch, pos, r.ts, r.id)).fetchone()[0]]


def _file_chunk(c: sqlite3.Connection, upto: int) -> bool:
    """File the oldest unfiled batches (up to `upto`) in one transaction, with their
    daily totals; False when there were none left."""
    with c:
        c.execute("BEGIN")
        found = c.execute(
            "SELECT u.rowid, u.id, b.rows FROM ledger_unfiled u LEFT JOIN ledger_batches b "
            "ON b.id = u.id WHERE u.rowid <= ? ORDER BY u.rowid LIMIT ?",
            (upto, FILE_CHUNK)).fetchall()
        filed: list[LedgerRow] = []
        for _, batch, blob in found:
            if blob is not None:
                filed += _file_rows(c, batch, _decode_batch(blob))
        add_days(c, filed)
        if found:
            c.execute("DELETE FROM ledger_unfiled WHERE rowid <= ?", (found[-1][0],))
    return bool(found)


def rows_at(c: sqlite3.Connection, refs: Sequence[tuple[str, int]]) -> list[LedgerRow]:
    """The rows at these (batch, place) references, in their order; each batch read and
    decoded once."""
    wanted = list(dict.fromkeys(batch for batch, _ in refs))
    batches: dict[str, list[LedgerRow]] = {}
    for i in range(0, len(wanted), BATCHES_READ):
        part = wanted[i:i + BATCHES_READ]
        found = c.execute(f"SELECT id, rows FROM ledger_batches WHERE id IN "
                          f"({', '.join('?' * len(part))})", part)
        batches.update((batch, _decode_batch(blob)) for batch, blob in found)
    return [batches[batch][pos] for batch, pos in refs]


TOTAL_PAGE = 50_000  # filed rows read per step when a ledger is totalled at open


def total_filed_rows(c: sqlite3.Connection) -> None:
    """Once per database: add the rows filed before the daily totals existed to them,
    page by page in time order, by the filing's own add_days."""
    with c:
        c.execute("BEGIN")
        if c.execute("SELECT 1 FROM dash_ready").fetchone() is not None:
            return
        after: tuple[float, str] = (-math.inf, "")
        while page := c.execute(
                "SELECT ts, id, batch, pos FROM ledger_rows WHERE (ts, id) > (?, ?) "
                "ORDER BY ts, id LIMIT ?", (*after, TOTAL_PAGE)).fetchall():
            add_days(c, rows_at(c, [(batch, pos) for _, _, batch, pos in page]))
            after = page[-1][0], page[-1][1]
        c.execute("INSERT INTO dash_ready VALUES (?)", (time.time(),))


class SqliteLedger:
    def __init__(self, db: Db, budgets: MemoryBudgets) -> None:
        self._db = db
        self._budgets = budgets
        db.call(total_filed_rows)

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
                if c.execute("INSERT OR IGNORE INTO ledger_batches (id, min_ts, max_ts, rows) "
                             "VALUES (?, ?, ?, ?)",
                             (batch_id, lo, hi, blob if kept is rows else _encode(kept))
                             ).rowcount:
                    c.execute("INSERT INTO ledger_unfiled (id) VALUES (?)", (batch_id,))
                c.executemany("INSERT OR REPLACE INTO counters (name, amount) VALUES (?, ?)",
                              counters)
        try:
            await self._db.run(write)
        except BaseException:
            self._budgets.dirty.update(name for name, _ in counters)
            raise

    async def file(self) -> None:
        """File every batch written before this call into the row tables."""
        upto = (await self._db.run(lambda c: c.execute(
            "SELECT max(rowid) FROM ledger_unfiled").fetchone()))[0]
        if upto is not None:
            while await self._db.run(lambda c: _file_chunk(c, upto)):
                pass

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` on the connection once every row written before this call is filed."""
        await self.file()
        return await self._db.run(fn)

    async def rows(self, since: float | None = None, until: float | None = None, *,
                   after: tuple[float, str] | None = None,
                   limit: int | None = None) -> list[LedgerRow]:
        lo = -math.inf if since is None else since
        cursor = after if after is not None else (-math.inf, "")
        hi = math.inf if until is None else until
        return await self.read(lambda c: rows_at(c, c.execute(
            "SELECT batch, pos FROM ledger_rows WHERE ts >= ? AND ts < ? AND (ts, id) > (?, ?) "
            "ORDER BY ts, id LIMIT ?",
            (max(lo, cursor[0]), hi, *cursor, -1 if limit is None else limit)).fetchall()))

    async def spend(self, by: str, since: float | None = None,
                    until: float | None = None) -> list[SpendRow]:
        return spend_of(await self.rows(since, until), by)

    async def charged(self, by: Sequence[str], day: float, month: float,
                      exclude: Callable[[], Awaitable[Collection[str]]]) -> list[Charged]:
        # (Never needed here: these budgets are persisted with the ledger. It keeps the
        # contract, so the shared store's SQL has a reference to agree with.)
        rows = await self.rows()
        return charged_of(rows, by, day, month, await exclude())

