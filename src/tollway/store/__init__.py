"""Storage behind small protocols (`base.py`); `open_store` picks the implementation."""

from __future__ import annotations

from tollway.config import Config
from tollway.store.base import Store


def open_store(config: Config) -> Store:
    from tollway.store.embedded import EmbeddedStore

    return EmbeddedStore(config.store.path)
