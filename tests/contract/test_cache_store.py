"""The cache store's contract: every implementation (embedded memory + SQLite, Redis)
keeps answers by key within a size bound, least recently used out first, and keeps
per-partition logs that readers follow from a cursor."""

from __future__ import annotations

from pathlib import Path

from tests.contract.conftest import CACHE_ENTRIES
from tollway.store.base import Store
from tollway.store.embedded import EmbeddedStore


async def test_get_returns_what_was_put(store: Store) -> None:
    assert await store.cache.get("k1") is None
    await store.cache.put("k1", b"\x00answer\xff", 60)
    assert await store.cache.get("k1") == b"\x00answer\xff"
    await store.cache.put("k1", b"newer", 60)
    assert await store.cache.get("k1") == b"newer"


async def test_the_least_recently_used_go_first(store: Store) -> None:
    for i in range(CACHE_ENTRIES):
        await store.cache.put(f"k{i}", b"v%d" % i, 60)
    assert await store.cache.get("k0") == b"v0"  # used: now the most recent
    for i in range(CACHE_ENTRIES, CACHE_ENTRIES + 10):
        await store.cache.put(f"k{i}", b"v%d" % i, 60)
    assert await store.cache.get("k0") == b"v0"
    gone = [i for i in range(1, CACHE_ENTRIES + 10) if await store.cache.get(f"k{i}") is None]
    assert gone == list(range(1, 11))


async def test_a_partition_log_is_read_from_a_cursor(store: Store) -> None:
    assert await store.cache.read("p", "") == ([], "")
    for i in range(3):
        await store.cache.append("p", b"e%d" % i, 60, 100)
    await store.cache.append("other", b"x", 60, 100)
    items, cursor = await store.cache.read("p", "")
    assert items == [b"e0", b"e1", b"e2"]
    assert await store.cache.read("p", cursor) == ([], cursor)
    await store.cache.append("p", b"e3", 60, 100)
    items, cursor2 = await store.cache.read("p", cursor)
    assert items == [b"e3"] and cursor2 != cursor
    assert (await store.cache.read("other", ""))[0] == [b"x"]


async def test_a_partition_log_keeps_about_its_newest_entries(store: Store) -> None:
    for i in range(500):
        await store.cache.append("p", b"e%d" % i, 60, 100)
    items, _ = await store.cache.read("p", "")
    # Redis trims approximately (whole radix-tree nodes), so "about" the newest 100.
    assert 100 <= len(items) < 500
    assert items[-1] == b"e499"
    assert items == [b"e%d" % i for i in range(500 - len(items), 500)]


async def test_the_embedded_cache_survives_a_restart(tmp_path: Path) -> None:
    s = EmbeddedStore(str(tmp_path), cache_entries=CACHE_ENTRIES)
    await s.cache.put("k", b"v", 60)
    await s.cache.put("short", b"v", 0.001)
    await s.cache.append("p", b"e0", 60, 100)
    await s.close()
    s2 = EmbeddedStore(str(tmp_path), cache_entries=CACHE_ENTRIES)
    try:
        assert await s2.cache.get("k") == b"v"
        assert await s2.cache.get("short") is None
        assert (await s2.cache.read("p", ""))[0] == [b"e0"]
    finally:
        await s2.close()
