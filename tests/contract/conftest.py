"""Each store implementation must pass the same contract tests: the embedded store,
and the shared store's two halves — its Redis part (budgets, limits, once-marks) and
its PostgreSQL part (keys, ledger) — over real connections to this machine's Redis
and PostgreSQL (`make test` starts them). Missing services fail the suite; nothing
is skipped."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis

from tollway.store.base import Store
from tollway.store.embedded import EmbeddedStore
from tollway.store.postgres import PostgresStore
from tollway.store.postgres_alerts import PostgresAlerts
from tollway.store.postgres_dashboard import PostgresDashboard
from tollway.store.redis import RedisStore
from tollway.store.redis_cache import RedisCache

CACHE_ENTRIES = 50  # the cache's size bound in these tests


@pytest.fixture(params=["embedded", "postgres", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path,
                postgres: ScratchPostgres) -> AsyncIterator[Store]:
    s: Store
    if request.param == "postgres":
        s = await PostgresBacked.open(await postgres.shared(), tmp_path)
    elif request.param == "redis":
        s = await RedisBacked.open(tmp_path)
    else:
        s = EmbeddedStore(str(tmp_path / "store"), cache_entries=CACHE_ENTRIES)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def reopen(tmp_path: Path) -> type[EmbeddedStore]:
    return EmbeddedStore


# PostgreSQL: a real server (TOLLWAY_TEST_POSTGRES_URL, a database to connect to for
# creating others), throwaway databases per session, dropped at its end.

class ScratchPostgres:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []
        self._shared: str | None = None

    async def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"tollway_test_{secrets.token_hex(6)}"
        try:
            conn = await asyncpg.connect(self.admin_url)
        except (OSError, asyncpg.PostgresError) as e:
            # Fail, never skip: CI must run these (`make test` starts the services).
            pytest.fail(f"PostgreSQL unavailable at {self.admin_url}: {e}")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return urlsplit(self.admin_url)._replace(path=f"/{name}").geturl()

    async def shared(self) -> str:
        """The session's database, its tables emptied: for tests that need one."""
        if self._shared is None:
            self._shared = await self.new_database()
        else:
            conn = await asyncpg.connect(self._shared)
            try:
                # (Batches too: claims and retention reach every owner's.)
                await conn.execute("TRUNCATE keys, ledger, alerts, conversations, "
                                   "conversation_turns, conversation_summaries, files, "
                                   "batches, batch_lines, dash_totals, dash_groups, dash_bins")
            finally:
                await conn.close()
        return self._shared

    async def drop_all(self) -> None:
        if not self.created:
            return
        conn = await asyncpg.connect(self.admin_url)
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def postgres() -> AsyncIterator[ScratchPostgres]:
    scratch = ScratchPostgres(os.environ.get("TOLLWAY_TEST_POSTGRES_URL",
                                             "postgresql://postgres@127.0.0.1:5432/postgres"))
    try:
        yield scratch
    finally:
        await scratch.drop_all()


class PostgresBacked:
    """Keys, the ledger and conversations in PostgreSQL; budgets, limits and once-marks
    embedded."""

    def __init__(self, pg: PostgresStore, embedded: EmbeddedStore) -> None:
        self.pg, self.embedded = pg, embedded
        self.keys, self.ledger = pg.keys, pg.ledger
        self.dashboard, self.alerts = PostgresDashboard(pg), PostgresAlerts(pg)
        self.budgets, self.limits, self.once = embedded.budgets, embedded.limits, embedded.once
        self.cache = embedded.cache
        self.conversations = pg.conversations
        self.responses = pg.responses
        self.batches = pg.batches

    @classmethod
    async def open(cls, url: str, tmp_path: Path) -> PostgresBacked:
        pg = PostgresStore(url)
        await pg.open()
        return cls(pg, EmbeddedStore(str(tmp_path / "store"), cache_entries=CACHE_ENTRIES))

    async def close(self) -> None:
        await self.pg.close()
        await self.embedded.close()


# Redis: a real server (TOLLWAY_TEST_REDIS_URL); each test under its own key prefix,
# deleted after it, so tests (and anything else on the server) never share keys.

REDIS_URL = os.environ.get("TOLLWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def open_redis(prefix: str, *, use_server_time: bool = False) -> RedisStore:
    """A RedisStore under `prefix` (the contract tests pass fake times: no server time)."""
    r = RedisStore(REDIS_URL, use_server_time=use_server_time, prefix=prefix)
    try:
        await r.open()
        await mark_current(r)
    except (OSError, redis.RedisError) as e:
        await r.close()
        pytest.fail(f"Redis unavailable at {REDIS_URL}: {e}")
    return r


async def mark_current(r: RedisStore) -> None:
    """Rebuild the (new, empty) prefix's budget counters from an empty ledger: they
    are current, as a gateway would leave them (policy/recovery.py)."""
    if await r.budgets.claim_rebuild("fixture", 10) == "mine":
        assert await r.budgets.commit_rebuild("fixture", [])


async def drop_prefix(r: RedisStore, prefix: str) -> None:
    async for key in r.client.scan_iter(match=f"{prefix}*", count=1000):
        await r.client.delete(key)


def new_prefix() -> str:
    return f"twtest:{secrets.token_hex(6)}:"


class RedisBacked:
    """Budgets, limits and once-marks in Redis; keys and the ledger embedded."""

    def __init__(self, r: RedisStore, embedded: EmbeddedStore, prefix: str) -> None:
        self.redis, self.embedded, self._prefix = r, embedded, prefix
        self.keys, self.ledger = embedded.keys, embedded.ledger
        self.dashboard, self.alerts = embedded.dashboard, embedded.alerts
        self.budgets, self.limits, self.once = r.budgets, r.limits, r.once
        self.cache = RedisCache(r.client, r.prefix, CACHE_ENTRIES)
        self.conversations = embedded.conversations
        self.responses = embedded.responses
        self.batches = embedded.batches

    @classmethod
    async def open(cls, tmp_path: Path) -> RedisBacked:
        prefix = new_prefix()
        r = await open_redis(prefix)
        return cls(r, EmbeddedStore(str(tmp_path / "store")), prefix)

    async def close(self) -> None:
        try:
            await drop_prefix(self.redis, self._prefix)
        finally:
            await self.redis.close()
            await self.embedded.close()
