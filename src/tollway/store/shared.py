"""The shared store, for a fleet of stateless replicas: Redis holds what must be
atomic and fast (budget counters and holds, rate-limit windows, once-marks), and
PostgreSQL what must be durable and queryable (keys, the ledger, conversations,
responses, files and batches). Cached answers live in Redis.

A replica starts whether or not either is reachable: `open` tries each once, and one
that is down is connected in the background (with backoff) while the replica serves by
the failure policy (store/outage.py) — its calls fail until then. Scripts are loaded
and migrations applied once it is reachable; `health` says which part is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tollway import tasks
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

log = logging.getLogger("tollway.store")
CHECK_SECONDS = 1.0  # a health check's bound on a part that does not answer
_BACKOFF = (0.1, 2.0)  # reconnect delays: first, most


class Connection:
    """One part's connection, made in the background until it is made."""

    def __init__(self, name: str, connect: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._connect = connect
        self.connected = False
        self.error: str | None = "not connected yet"
        self.tried = asyncio.Event()  # the first attempt is over, whatever it gave
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"tollway-connect-{self.name}")

    async def _run(self) -> None:
        delay, failures = _BACKOFF[0], 0
        while True:
            try:
                await self._connect()
            except Exception as e:
                self.error = f"{type(e).__name__}: {e}"
                failures += 1
                # Loud once, then quiet: the part is down until it is back.
                log.log(logging.WARNING if failures == 1 else logging.DEBUG,
                        "%s unreachable (%s): serving without it, connecting in the "
                        "background", self.name, self.error)
                self.tried.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF[1])
                continue
            self.connected, self.error = True, None
            self.tried.set()
            if failures:
                log.warning("%s connected after %d failed attempt(s)", self.name, failures)
            return

    async def stop(self) -> None:
        task, self._task = self._task, None
        await tasks.stop(task)


class SharedStore:
    def __init__(self, redis_url: str, postgres_url: str, *, use_server_time: bool = True,
                 cache_entries: int = 10_000) -> None:
        from tollway.store.memory import MemoryLimits
        from tollway.store.postgres import PostgresStore
        from tollway.store.postgres_alerts import PostgresAlerts
        from tollway.store.postgres_dashboard import PostgresDashboard
        from tollway.store.redis import RedisStore
        from tollway.store.redis_cache import RedisCache

        self.redis = RedisStore(redis_url, use_server_time=use_server_time)
        self.postgres = PostgresStore(postgres_url)
        self.budgets: BudgetStore = self.redis.budgets
        self.limits: LimitStore = self.redis.limits
        self.fallback_limits: LimitStore = MemoryLimits()  # while Redis is down
        self.once: OnceStore = self.redis.once
        self.keys: KeyStore = self.postgres.keys
        self.ledger: LedgerStore = self.postgres.ledger
        self.dashboard: DashboardStore = PostgresDashboard(self.postgres)
        self.alerts: AlertStore = PostgresAlerts(self.postgres)
        self.conversations: ConversationStore = self.postgres.conversations
        self.responses: ResponseStore = self.postgres.responses
        self.batches: BatchStore = self.postgres.batches
        self.cache: CacheStore = RedisCache(self.redis.client, self.redis.prefix, cache_entries)
        self._parts = {"redis": Connection("redis", self.redis.open),
                       "postgres": Connection("postgres", self.postgres.open)}

    async def open(self) -> None:
        """Connect both (loading the scripts, migrating), each tried once before this
        returns; one that is down goes on connecting in the background."""
        for part in self._parts.values():
            part.start()
        await asyncio.gather(*(part.tried.wait() for part in self._parts.values()))

    async def health(self) -> dict[str, PartHealth]:
        checks = {"redis": self.redis.ping, "postgres": self.postgres.ping}
        out: dict[str, PartHealth] = {}
        for name, part in self._parts.items():
            if not part.connected:
                out[name] = PartHealth(False, part.error)
                continue
            try:
                await asyncio.wait_for(checks[name](), CHECK_SECONDS)
                out[name] = PartHealth(True)
            except Exception as e:
                out[name] = PartHealth(False, f"{type(e).__name__}: {e}")
        return out

    async def close(self) -> None:
        for part in self._parts.values():
            await part.stop()
        await self.cache.close()
        await self.redis.close()
        await self.postgres.close()
