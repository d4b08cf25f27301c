"""What a request asks of the cache, and whether it may use it at all.

Per request: `Cache-Control: no-cache` (do not serve from the cache, but store the
fresh answer: a refresh), `Cache-Control: no-store` (neither), `x-tollway-cache:
force` (cache even above `max_temperature`) or `off` (= no-store),
`x-tollway-cache-ttl: SECONDS` (how long the answer is kept), and
`x-tollway-cache-namespace: NAME` (a separate keyspace, e.g. per prompt version).
"""

from __future__ import annotations

from dataclasses import dataclass

from tollway.config import CacheConfig, ModelCacheConfig
from tollway.errors import InvalidRequest
from tollway.types import ChatRequest

MAX_NAMESPACE = 128


@dataclass(slots=True)
class CacheAsk:
    read: bool = True
    write: bool = True
    force: bool = False
    ttl: float | None = None
    namespace: str = ""


def parse_cache_control(value: str, ask: CacheAsk) -> None:
    for part in value.lower().split(","):
        directive = part.strip().split("=", 1)[0]
        if directive == "no-cache":
            ask.read = False
        elif directive == "no-store":
            ask.read = ask.write = False


def parse_tollway(name: bytes, value: str, ask: CacheAsk) -> None:
    """An `x-tollway-cache*` header (lower-case name, stripped value)."""
    if name == b"x-tollway-cache":
        v = value.lower()
        if v == "force":
            ask.force = True
        elif v in ("off", "bypass", "no-store"):
            ask.read = ask.write = False
        elif v == "refresh":
            ask.read = False
        else:
            raise InvalidRequest(f"x-tollway-cache: expected force, refresh or off, got "
                                 f"{value!r}.")
    elif name == b"x-tollway-cache-ttl":
        try:
            ttl = float(value)
        except ValueError:
            ttl = -1.0
        if not 0 < ttl <= 365 * 86400:
            raise InvalidRequest(f"x-tollway-cache-ttl: expected seconds in (0, 31536000], "
                                 f"got {value!r}.")
        ask.ttl = ttl
    elif name == b"x-tollway-cache-namespace":
        if len(value) > MAX_NAMESPACE:
            raise InvalidRequest(f"x-tollway-cache-namespace: at most {MAX_NAMESPACE} "
                                 "characters.")
        ask.namespace = value


@dataclass(slots=True, frozen=True)
class AliasCache:
    """The cache settings of one alias, the global section merged with its overrides."""

    enabled: bool
    ttl: float
    semantic: bool
    threshold: float | None  # None: the mode's calibrated one
    across: bool  # also the context-free keys of a stand-alone latest turn
    mode: str = "strict"  # the operating point when no threshold is set


def for_alias(cfg: CacheConfig, override: ModelCacheConfig | None) -> AliasCache:
    o = override or ModelCacheConfig()
    # Turning the semantic cache on for an alias turns its cache on.
    enabled = (o.enabled if o.enabled is not None else cfg.enabled) or bool(o.semantic)
    semantic = o.semantic if o.semantic is not None else cfg.semantic.enabled
    return AliasCache(enabled=enabled,
                      ttl=o.ttl_seconds if o.ttl_seconds is not None else cfg.ttl_seconds,
                      semantic=semantic and enabled,
                      threshold=o.threshold if o.threshold is not None
                      else cfg.semantic.threshold,
                      mode=o.mode or cfg.semantic.mode,
                      # Sharing needs the model: the continuity check is by meaning.
                      across=(o.across_conversations if o.across_conversations is not None
                              else cfg.across_conversations) and semantic and enabled)


def bypass_reason(req: ChatRequest, cfg: CacheConfig, ask: CacheAsk | None) -> str | None:
    """Why this request does not use the cache at all, or None."""
    if ask is not None and not ask.read and not ask.write:
        return "no-store"
    if not req.messages:
        return "empty"
    if (req.temperature is not None and req.temperature > cfg.max_temperature
            and not (ask is not None and ask.force)):
        return "temperature"
    return None


def ask_of(cache_control: str | None, headers: list[tuple[bytes, str]] | None
           ) -> CacheAsk | None:
    """The request's cache controls; None when it sent none (the common case)."""
    if cache_control is None and not headers:
        return None
    ask = CacheAsk()
    if cache_control is not None:
        parse_cache_control(cache_control, ask)
    for name, value in headers or ():
        parse_tollway(name, value, ask)
    return ask
