"""Storage behind small protocols (`base.py`); `open_store` picks the implementation."""

from __future__ import annotations

from tollway.config import Config
from tollway.store.base import Store


def open_store(config: Config) -> Store:
    """The configured store, not yet connected: `await store.open()` before use."""
    st = config.store
    if st.shared:
        from tollway.store.shared import SharedStore

        assert st.redis_url is not None and st.postgres_url is not None
        return SharedStore(st.redis_url, st.postgres_url,
                           cache_entries=config.cache.max_entries)
    from tollway.store.embedded import EmbeddedStore

    return EmbeddedStore(st.path, cache_entries=config.cache.max_entries)
