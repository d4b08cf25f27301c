"""The `store` section: where keys, spend, the ledger and conversations are kept."""

from __future__ import annotations

from typing import Literal

import msgspec

from tollway.errors import ConfigError


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True):
    """`embedded` (default): memory + SQLite under `path`, one process. `shared`:
    Redis + PostgreSQL, for many replicas; given `redis_url` and `postgres_url` the
    kind is shared without saying so."""

    kind: Literal["embedded", "shared"] | None = None
    path: str = ".tollway"  # also where the ledger spills when its store is down
    redis_url: str | None = None
    postgres_url: str | None = None

    @property
    def shared(self) -> bool:
        return self.kind == "shared" or (self.kind is None and bool(self.redis_url))


def check_store(st: StoreConfig) -> None:
    if st.shared and not (st.redis_url and st.postgres_url):
        raise ConfigError("store: the shared store needs both redis_url and postgres_url "
                          "(e.g. redis://127.0.0.1:6379/0 and postgresql://user@host/tollway)")
    if st.kind == "embedded" and (st.redis_url or st.postgres_url):
        raise ConfigError("store.kind: embedded does not use redis_url/postgres_url; set "
                          "kind: shared (or leave kind out)")
