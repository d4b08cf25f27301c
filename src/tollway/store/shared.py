"""The shared store, for a fleet of stateless replicas: Redis holds what must be
atomic and fast (budget counters and holds, rate-limit windows, once-marks), and
PostgreSQL what must be durable and queryable (keys, the ledger). Cached answers live in Redis."""

from __future__ import annotations

from tollway.store.base import (
    BudgetStore,
    CacheStore,
    ConversationStore,
    KeyStore,
    LedgerStore,
    LimitStore,
    OnceStore,
)


class SharedStore:
    def __init__(self, redis_url: str, postgres_url: str, *, use_server_time: bool = True,
                 cache_entries: int = 10_000) -> None:
        from tollway.store.memory import MemoryLimits
        from tollway.store.postgres import PostgresStore
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
        self.conversations: ConversationStore = self.postgres.conversations
        self.cache: CacheStore = RedisCache(self.redis.client, self.redis.prefix, cache_entries)

    async def open(self) -> None:
        await self.redis.open()
        await self.postgres.open()

    async def close(self) -> None:
        await self.cache.close()
        await self.redis.close()
        await self.postgres.close()
