"""The `cache` section (exact and semantic response cache) and an alias's overrides of it."""

from __future__ import annotations

from typing import Literal

import msgspec

from tollway.errors import ConfigError


class SemanticCacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Serve an earlier answer to a differently worded question with the same meaning.
    Entries are partitioned (tenant, model, parameters, system prompt and earlier
    turns); only the latest user turn is compared, by all-MiniLM-L6-v2 run locally."""

    enabled: bool = False
    # Which calibrated operating point: "strict" (the default, >= 90% precision on
    # held-out question pairs) or "balanced" (more hits at a lower precision; both
    # measured in docs/benchmarks/cache_precision.md). Near-repeats are served in both.
    mode: Literal["strict", "balanced"] = "strict"
    # The match score (0-1: the cosine and the words that differ, weighed by a model
    # fitted on labelled question pairs) a candidate must reach; None: the mode's.
    threshold: float | None = None
    max_entries: int = 100_000  # per partition; the oldest go first


class CacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The response cache. Off unless enabled here (for every alias) or per alias
    (`models.NAME.cache`)."""

    enabled: bool = False
    # Who shares entries: each team (keys without a team: each key), each key, each
    # end user of a key, or everyone ("global").
    scope: Literal["team", "key", "user", "global"] = "team"
    ttl_seconds: float = 3600.0
    max_entries: int = 10_000  # exact entries, least recently used evicted
    # A request with a higher explicit temperature asks for variety: not cached unless
    # it sends `x-tollway-cache: force`. (No temperature given: cached.)
    max_temperature: float = 0.7
    version: str = "1"  # part of every key: change it to start afresh
    # Fail open: a cache call slower than this is abandoned and the request goes on.
    timeout_ms: float = 50.0
    # A latest turn that stands alone (no reference back to earlier turns, by rules and
    # by meaning) is also looked up, and stored, under the keys it would have as a
    # first turn, so a FAQ asked mid-conversation is served from another
    # conversation's answer. Only where the semantic cache is on (the check needs its
    # model); 0 wrong hits on 426 context-dependent pairs (docs/benchmarks/cross_cache.md).
    across_conversations: bool = True
    redis_url: str | None = None  # its own Redis; default: the store's (embedded: SQLite)
    semantic: SemanticCacheConfig = msgspec.field(default_factory=SemanticCacheConfig)


class ModelCacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Per-alias overrides of the `cache` section (unset: inherited)."""

    enabled: bool | None = None
    ttl_seconds: float | None = None
    semantic: bool | None = None
    mode: Literal["strict", "balanced"] | None = None
    threshold: float | None = None
    across_conversations: bool | None = None


def check_cache(c: CacheConfig, overrides: dict[str, ModelCacheConfig]) -> None:
    """`overrides`: the aliases' own (`models.NAME.cache`), by alias."""
    if c.ttl_seconds <= 0 or c.max_entries < 1 or c.timeout_ms <= 0:
        raise ConfigError("cache: ttl_seconds > 0, max_entries >= 1 and timeout_ms > 0")
    if c.redis_url and not c.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"cache.redis_url: expected a redis:// URL, got {c.redis_url!r}")
    thresholds = [("cache.semantic.threshold", c.semantic.threshold)] + [
        (f"models.{a}.cache.threshold", o.threshold) for a, o in overrides.items()]
    for where, t in thresholds:
        if t is not None and not 0 < t <= 1:
            raise ConfigError(f"{where}: a match score in (0, 1], e.g. 0.86")
    if c.semantic.max_entries < 1:
        raise ConfigError("cache.semantic.max_entries: must be >= 1")
    for a, o in overrides.items():
        if o.ttl_seconds is not None and o.ttl_seconds <= 0:
            raise ConfigError(f"models.{a}.cache.ttl_seconds: must be > 0")
