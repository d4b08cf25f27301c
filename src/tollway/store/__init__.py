"""Storage behind small protocols (`base.py`); `open_store` is the one place that picks
the implementation, so nothing outside `store/` knows which is in use."""

from __future__ import annotations

from tollway.config import Config
from tollway.store.base import Store


def open_store(config: Config) -> Store:
    """The configured store, not yet connected (`await store.open()` before use): its
    cache part on a Redis of its own when `cache.redis_url` is set, and its rate limits
    with their in-process fallback."""
    st, cache = config.store, config.cache
    store: Store
    if st.shared:
        from tollway.store.shared import SharedStore

        assert st.redis_url is not None and st.postgres_url is not None
        store = SharedStore(st.redis_url, st.postgres_url, cache_entries=cache.max_entries)
    else:
        from tollway.store.embedded import EmbeddedStore

        store = EmbeddedStore(st.path, cache_entries=cache.max_entries)
    if cache.redis_url:
        from tollway.store.redis import LAYOUT
        from tollway.store.redis_cache import RedisCache

        store.cache = RedisCache.own(cache.redis_url, f"tw:{LAYOUT}:", cache.max_entries,
                                     timeout=max(cache.timeout_ms / 1000, 0.001))
    return store
