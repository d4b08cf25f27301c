"""The cache in Redis, shared by a fleet.

    P{c}:e:<key>     string: a cached answer (PX: its TTL)
    P{c}:lru         zset: key -> last use (a tick of P{c}:tick, which every get and put
                     increments: strictly ordered, unlike a clock); past `max_entries`
                     the least recently used are deleted by the put that overflows
    P{c}:s:<part>    stream: a semantic partition's entries (MAXLEN ~ max_entries;
                     the stream lives a TTL after its last append)

Reads touch the LRU score in the same script, so a get is one round trip.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# KEYS: entry, lru, tick. ARGV: key.
_GET = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1]) end
return v
"""

# KEYS: entry, lru, tick. ARGV: key, value, ttl ms, max entries, entry prefix.
_PUT = """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #old, 2 do redis.call('DEL', ARGV[5] .. old[i]) end
end
"""


class RedisCache:
    def __init__(self, client: Redis, prefix: str, max_entries: int, *,
                 owns_client: bool = False) -> None:
        self._client = client
        self._owns_client = owns_client
        self._entry = f"{prefix}{{c}}:e:"
        self._lru = f"{prefix}{{c}}:lru"
        self._tick = f"{prefix}{{c}}:tick"
        self._log = f"{prefix}{{c}}:s:"
        self._max = max_entries
        self._get: AsyncScript = client.register_script(_GET)
        self._put: AsyncScript = client.register_script(_PUT)

    @classmethod
    def own(cls, url: str, prefix: str, max_entries: int, timeout: float) -> RedisCache:
        """On a Redis of the cache's own (`cache.redis_url`), with the cache's fail-open
        budget as its socket timeout."""
        client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, prefix, max_entries, owns_client=True)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def get(self, key: str) -> bytes | None:
        value = await self._get(keys=[self._entry + key, self._lru, self._tick], args=[key])
        return bytes(value) if value is not None else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._put(keys=[self._entry + key, self._lru, self._tick],
                        args=[key, value, max(1, int(ttl * 1000)), self._max, self._entry])

    async def append(self, partition: str, entry: bytes, ttl: float, max_entries: int
                     ) -> None:
        name = self._log + partition
        async with self._client.pipeline(transaction=True) as p:
            p.xadd(name, {b"e": entry}, maxlen=max_entries, approximate=True)
            p.pexpire(name, max(1, int(ttl * 1000)))
            await p.execute()

    async def read(self, partition: str, cursor: str) -> tuple[list[bytes], str]:
        found = await self._client.xrange(self._log + partition,
                                          min=f"({cursor}" if cursor else "-", count=10_000)
        if not found:
            return [], cursor
        items: list[bytes] = []
        for _, fields in found:
            assert fields is not None
            items.append(bytes(fields[b"e"]))  # type: ignore[arg-type]
        last = found[-1][0]
        return items, last.decode() if isinstance(last, bytes) else str(last)
