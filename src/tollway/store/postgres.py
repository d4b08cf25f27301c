"""The PostgreSQL half of the shared store: keys, the ledger, conversations
(postgres_conversations.py), stored responses (postgres_responses.py), and files and
batches (postgres_batches.py), durable and queryable by every replica (store/shared.py
composes it with Redis).

Keys are served from memory, like the embedded store, but here other replicas write
too: `put` sends a NOTIFY in its own statement's transaction, and every replica
LISTENs and drops the key from its cache, so a revocation takes effect fleet-wide as
soon as the notification lands (milliseconds), not after a TTL. A miss reads through.
While the LISTEN connection is down nothing is cached: losing it clears the cache,
and lookups read through until it is back (correctness over speed).

The ledger is a plain table, one column per LedgerRow field, written a batch per
statement (one round trip, idempotent by row id) and reported on with SQL GROUP BY.

The URL must reach PostgreSQL itself or a session-mode pooler: LISTEN needs a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from importlib import resources
from typing import Any

import asyncpg
import msgspec

from tollway import tasks
from tollway.accounting.rows import CHARGE_FIELDS, SPEND_GROUPS, Charged, LedgerRow, SpendRow
from tollway.keys import KeyRecord
from tollway.store.postgres_batches import PostgresBatches
from tollway.store.postgres_conversations import PostgresConversations
from tollway.store.postgres_responses import PostgresResponses

log = logging.getLogger("tollway.store.postgres")

CHANNEL = "tollway_keys"
LISTENER = "tollway-listen"  # the LISTEN connection's application_name, for operators
# Held (per transaction) while migrating, so replicas starting together take turns.
MIGRATION_LOCK = 0x746F6C6C776179  # "tollway"

_MIGRATION_FILE = re.compile(r"(\d+)_[\w-]+\.sql")
_BOOKKEEPING = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"""


def migrations() -> list[tuple[int, str]]:
    """The shipped migrations as (version, sql), in order."""
    found: dict[int, str] = {}
    for f in (resources.files("tollway.store") / "migrations").iterdir():
        m = _MIGRATION_FILE.fullmatch(f.name)
        if m is None:
            continue
        version = int(m[1])
        if version in found:
            raise RuntimeError(f"two migrations numbered {version}")
        found[version] = f.read_text(encoding="utf-8")
    return sorted(found.items())


async def apply_migrations(conn: Any,
                           progress: Callable[[int], object] | None = None) -> list[int]:
    """Apply the migrations this database lacks, each in its own transaction under an
    advisory lock (a concurrent migrate waits, then sees it applied); the versions
    applied here. `progress` is told each version once it is checked or applied (a
    migration over a large ledger may take minutes)."""
    applied = []
    for version, sql in migrations():
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(_BOOKKEEPING)
            if not await conn.fetchval("SELECT true FROM schema_migrations WHERE version = $1",
                                       version):
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)",
                                   version)
                applied.append(version)
        if progress is not None:
            progress(version)
    return applied


async def migrate(url: str, progress: Callable[[int], object] | None = None) -> list[int]:
    """Bring the database at `url` up to date (`tollway migrate`); versions applied."""
    conn = await asyncpg.connect(url)
    try:
        return await apply_migrations(conn, progress)
    finally:
        await conn.close()


class PostgresStore:
    """Keys, the ledger and conversations in PostgreSQL. `open()` before use (it
    migrates)."""

    def __init__(self, url: str, *, pool_size: int = 10, ping_seconds: float = 5.0,
                 command_timeout: float | None = 60.0, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.pool_size = pool_size
        # A database that does not answer fails a connection attempt (retried) in this.
        self.connect_timeout = connect_timeout
        # A hung query fails rather than stalls its caller (the ledger writer retries).
        self.command_timeout = command_timeout
        self.ping_seconds = ping_seconds  # how soon a silently dead LISTEN is noticed
        self._pool: Any = None
        self._listener: Any = None
        self._watch: asyncio.Task[None] | None = None
        self.listens = 0  # LISTEN connections made: 1 plus reconnects
        self.keys = PostgresKeys(self)
        self.ledger = PostgresLedger(self)
        self.conversations = PostgresConversations(self)
        self.responses = PostgresResponses(self)
        self.batches = PostgresBatches(self)

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise ConnectionError("PostgreSQL is not connected (yet)")
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size,
                                               command_timeout=self.command_timeout,
                                               timeout=self.connect_timeout)
        try:
            await self.migrate()
            lost = await self._listen()
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        self._watch = asyncio.create_task(self._keep_listening(lost),
                                          name="tollway-postgres-listen")

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    async def migrate(self) -> list[int]:
        async with self.pool.acquire() as conn:
            return await apply_migrations(conn)

    async def close(self) -> None:
        watch, self._watch = self._watch, None
        await tasks.stop(watch)
        self._drop_listener()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _listen(self) -> asyncio.Event:
        """Connect and LISTEN; then (and only then) the key cache may fill. The event
        is set when the connection is lost."""
        conn = await asyncpg.connect(self.url, timeout=self.connect_timeout,
                                     server_settings={"application_name": LISTENER})
        lost = asyncio.Event()

        def on_lost(_conn: Any) -> None:
            lost.set()
            if self._listener is conn:
                self.keys.stop_caching()  # at once, not when the watcher next wakes

        self._listener = conn
        try:
            conn.add_termination_listener(on_lost)
            await conn.add_listener(CHANNEL, self._on_notify)
            if lost.is_set() or conn.is_closed():
                raise ConnectionError("the LISTEN connection closed as it started")
        except BaseException:
            self._drop_listener()
            raise
        self.keys.start_caching()
        self.listens += 1
        return lost

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.keys.notified(payload)

    def _drop_listener(self) -> None:
        self.keys.stop_caching()
        conn, self._listener = self._listener, None
        if conn is not None:
            conn.terminate()

    async def _keep_listening(self, lost: asyncio.Event) -> None:
        """Watch the LISTEN connection (a ping catches a silently dead one); when it is
        lost, stop caching and re-listen, backing off while the database is away."""
        while True:
            try:
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self.ping_seconds)
                    if not lost.is_set():
                        await asyncio.wait_for(self._listener.fetchval("SELECT 1"),
                                               self.ping_seconds)
            except Exception as e:  # whatever it was, the cache can no longer be trusted
                log.warning("postgres LISTEN connection failed: %r", e)
            self._drop_listener()
            backoff = 0.1
            while True:
                try:
                    lost = await self._listen()
                    log.info("postgres LISTEN connection re-established")
                    break
                except Exception as e:
                    log.warning("postgres LISTEN reconnect failed (retry in %.1fs): %r",
                                backoff, e)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)


_encode_key = msgspec.json.Encoder().encode
_decode_key = msgspec.json.Decoder(KeyRecord).decode

# One statement, so the NOTIFY is in the upsert's transaction: sent if and only if
# the change commits, and only after it is visible.
_PUT_KEY = f"""
WITH up AS (
    INSERT INTO keys (id, hash, created_at, record) VALUES ($1, $2, $3, $4::jsonb)
    ON CONFLICT (id) DO UPDATE SET hash = EXCLUDED.hash, created_at = EXCLUDED.created_at,
        record = EXCLUDED.record, updated_at = now()
    RETURNING id)
SELECT pg_notify('{CHANNEL}', id) FROM up"""


class PostgresKeys:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._by_hash: dict[str, KeyRecord] = {}
        self._by_id: dict[str, KeyRecord] = {}
        # Bumped by every invalidation: a read-through that started before one may
        # have read the old record, so it does not cache what it read.
        self._generation = 0
        self.caching = False  # True only while LISTEN is up
        self.invalidations = 0  # notifications received

    async def put(self, rec: KeyRecord) -> None:
        await self._store.pool.execute(_PUT_KEY, rec.id, rec.hash, rec.created_at,
                                       _encode_key(rec).decode())
        self.forget(rec.id)  # our own cache at once, not when the notification is back

    async def by_hash(self, key_hash: str) -> KeyRecord | None:
        rec = self._by_hash.get(key_hash)
        if rec is not None:
            return rec
        return await self._read("SELECT record FROM keys WHERE hash = $1", key_hash)

    async def by_id(self, key_id: str) -> KeyRecord | None:
        rec = self._by_id.get(key_id)
        if rec is not None:
            return rec
        return await self._read("SELECT record FROM keys WHERE id = $1", key_id)

    async def all(self) -> list[KeyRecord]:
        raw = await self._store.pool.fetch("SELECT record FROM keys ORDER BY created_at, id")
        return [_decode_key(r[0]) for r in raw]

    async def _read(self, sql: str, arg: str) -> KeyRecord | None:
        generation = self._generation
        raw = await self._store.pool.fetchval(sql, arg)
        if raw is None:
            return None  # misses are not cached: a new key's NOTIFY names only its id
        rec = _decode_key(raw)
        if self.caching and generation == self._generation:
            old = self._by_id.pop(rec.id, None)
            if old is not None:
                self._by_hash.pop(old.hash, None)
            self._by_id[rec.id] = rec
            self._by_hash[rec.hash] = rec
        return rec

    def notified(self, key_id: str) -> None:
        self.invalidations += 1
        self.forget(key_id)

    def forget(self, key_id: str) -> None:
        self._generation += 1
        rec = self._by_id.pop(key_id, None)
        if rec is not None:
            self._by_hash.pop(rec.hash, None)

    def start_caching(self) -> None:
        self._clear()  # whatever was cached may have missed notifications
        self.caching = True

    def stop_caching(self) -> None:
        self.caching = False
        self._clear()

    def _clear(self) -> None:
        self._generation += 1
        self._by_hash.clear()
        self._by_id.clear()


LEDGER_COLUMNS = LedgerRow.__struct_fields__  # the table's columns, in this order
_COLS = ", ".join(f'"{name}"' for name in LEDGER_COLUMNS)

# The batch goes as one JSON array, each row an object keyed by column name: the
# client's work is one msgspec encode (about 1 us a row, a sixth of binding 29 column
# arrays), which matters because it runs on the gateway's event loop. Sent as bytea,
# so the bytes go as they are; PostgreSQL's float parsing reads msgspec's shortest
# float repr back to the same double.
# JSON has no NaN or infinity (msgspec writes null): a required float column takes
# them as NaN, so one odd value cannot fail its batch on every retry.
_info = msgspec.inspect.type_info(LedgerRow)
assert isinstance(_info, msgspec.inspect.StructType)
_VALUES = ", ".join(f"coalesce(\"{f.name}\", 'NaN')"
                    if isinstance(f.type, msgspec.inspect.FloatType) else f'"{f.name}"'
                    for f in _info.fields)
_APPEND = (f"INSERT INTO ledger ({_COLS}) SELECT {_VALUES} FROM json_populate_recordset("
           "NULL::ledger, convert_from($1::bytea, 'UTF8')::json) ON CONFLICT (id) DO NOTHING")
_encode_rows = msgspec.json.Encoder().encode
_ROWS = (f"SELECT {_COLS} FROM ledger WHERE ts >= $1 AND ts < $2 AND (ts, id) > ($3, $4) "
         "ORDER BY ts, id LIMIT $5")

# For each spend grouping: (the key grouped on, its label), with spend_of's exact
# semantics: empty strings count as missing, as they do for Python's `or`; the day is
# the UTC date of floor(ts), as time.gmtime floors (floor(ts) is an exact integer,
# so dividing it by 86400 cannot round up into the next day).
GROUP_SQL: dict[str, tuple[str, str]] = {
    "day": ("floor(floor(ts) / 86400)",
            "to_char(to_timestamp(g * 86400) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
    "model": ("coalesce(nullif(model_asked, ''), '(none)')", "g"),
    "upstream": ("coalesce(nullif(provider, '') || '/' || nullif(model, ''), nullif(model, ''), "
                 "'(none)')", "g"),
    "key": ("coalesce(nullif(key_lineage, ''), '(no key)')", "g"),
    "user": ("coalesce(nullif(\"user\", ''), '(none)')", "g"),
    "team": ("coalesce(nullif(team, ''), '(none)')", "g"),
    "feature": ("coalesce(nullif(feature, ''), '(none)')", "g"),
    "kind": ("kind", "g"),
    "batch": ("coalesce(nullif(batch_id, ''), '(none)')", "g"),
}
assert set(GROUP_SQL) == set(SPEND_GROUPS)
# rows.served_model: the dashboard's model label.
SERVED_MODEL_SQL = "coalesce(nullif(model, ''), nullif(model_asked, ''), '(none)')"
# Sorted as Python sorts strings (by code point, which UTF-8 bytes under "C" match),
# not by the database's locale.
_SPEND = {by: f"""
SELECT ({label}) COLLATE "C" AS grp, n, input_tokens, output_tokens, cost_usd, saved_usd FROM (
    SELECT {key} AS g, count(*) AS n, sum(input_tokens)::bigint AS input_tokens,
           sum(output_tokens)::bigint AS output_tokens, sum(cost_usd) AS cost_usd,
           sum(saved_usd) AS saved_usd
    FROM ledger WHERE ts >= $1 AND ts < $2 GROUP BY 1) totals
ORDER BY grp""" for by, (key, label) in GROUP_SQL.items()}


# What rows charged to budgets (rows.charged_of in SQL): per period and per the values
# of the fields grouped by (the others NULL), the rows named in $3 left out. A full
# scan (`total` budgets count every row ever), run once per loss of the counters, so
# it may take longer than an ordinary statement.
CHARGED_TIMEOUT = 600.0
def _charged_sql(by: Sequence[str]) -> str:
    cols = ", ".join(f'"{f}"' if f in by else f'NULL::text AS "{f}"' for f in CHARGE_FIELDS)
    grouped = "".join(f', "{f}"' for f in by)
    return f"""
SELECT CASE WHEN ts >= $1 THEN 'day' WHEN ts >= $2 THEN 'month' ELSE 'total' END AS period,
       {cols}, coalesce(sum(nullif(cost_usd, 'NaN')), 0) AS usd,
       sum(input_tokens + output_tokens)::float8 AS tokens
FROM ledger
WHERE (cost_usd <> 0 OR input_tokens <> 0 OR output_tokens <> 0) AND NOT (id = ANY($3::text[]))
GROUP BY 1{grouped}"""


def _window(since: float | None, until: float | None) -> tuple[float, float]:
    # Infinite bounds rather than "IS NULL OR": the range stays sargable in a generic plan.
    return (-math.inf if since is None else since, math.inf if until is None else until)


def _without_nul(row: LedgerRow) -> LedgerRow:
    """PostgreSQL text cannot hold NUL, and a row it refuses would fail its batch on
    every retry; the fields that carry one (caller-supplied, like `user`) get U+FFFD."""
    changes = {name: value.replace("\x00", "\ufffd") for name in LEDGER_COLUMNS
               if isinstance(value := getattr(row, name), str) and "\x00" in value}
    return msgspec.structs.replace(row, **changes) if changes else row


class PostgresLedger:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def append(self, rows: Sequence[LedgerRow]) -> None:
        if not rows:
            return
        blob = _encode_rows(rows)
        if b"\\u0000" in blob:  # (rare: a false alarm only costs an encode)
            blob = _encode_rows([_without_nul(r) for r in rows])
        await self._store.pool.execute(_APPEND, blob)

    async def rows(self, since: float | None = None, until: float | None = None, *,
                   after: tuple[float, str] | None = None,
                   limit: int | None = None) -> list[LedgerRow]:
        cursor = after if after is not None else (-math.inf, "")
        found = await self._store.pool.fetch(_ROWS, *_window(since, until), *cursor, limit)
        return [LedgerRow(**r) for r in found]

    async def spend(self, by: str, since: float | None = None,
                    until: float | None = None) -> list[SpendRow]:
        sql = _SPEND.get(by)
        if sql is None:
            raise ValueError(f"by: one of {', '.join(SPEND_GROUPS)}")
        found = await self._store.pool.fetch(sql, *_window(since, until))
        return [SpendRow(group=r[0], requests=r[1], input_tokens=r[2], output_tokens=r[3],
                         cost_usd=r[4], saved_usd=r[5]) for r in found]

    async def charged(self, by: Sequence[str], day: float, month: float,
                      exclude: Callable[[], Awaitable[Collection[str]]]) -> list[Charged]:
        unknown = set(by) - set(CHARGE_FIELDS)
        if unknown:
            raise ValueError(f"by: not a charge field: {', '.join(sorted(unknown))}")
        async with self._store.pool.acquire() as conn, conn.transaction(
                isolation="repeatable_read", readonly=True):
            # The snapshot is taken by the first statement: a row written after it is
            # not read, and one read was written before `exclude` is asked.
            await conn.execute("SELECT 1")
            left_out = list(await exclude())
            found = await conn.fetch(_charged_sql(by), day, month, left_out,
                                     timeout=CHARGED_TIMEOUT)
        return [Charged(**r) for r in found]
