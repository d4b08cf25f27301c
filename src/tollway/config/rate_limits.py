"""The `rate_limits` section: inbound limits per key, end user, IP and alias."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from tollway.errors import ConfigError


class RateLimit(msgspec.Struct, forbid_unknown_fields=True):
    rpm: int | None = None
    tpm: int | None = None  # input + output tokens; the worst case counts until settled


class RateLimitsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Inbound limits, as sliding windows over the last minute."""

    keys: RateLimit = msgspec.field(default_factory=RateLimit)  # each key (its own rpm/tpm win)
    users: RateLimit = msgspec.field(default_factory=RateLimit)  # each end user
    ips: RateLimit = msgspec.field(default_factory=RateLimit)  # each client IP without a key
    models: dict[str, RateLimit] = {}  # per alias, all callers together


def check_rate_limits(rl: RateLimitsConfig, is_model: Callable[[str], bool]) -> None:
    """`is_model`: whether a name (alias or model) resolves, for the per-alias limits."""
    named = [("keys", rl.keys), ("users", rl.users), ("ips", rl.ips),
             *((f"models.{m}", lim) for m, lim in rl.models.items())]
    for where, lim in named:
        for field in ("rpm", "tpm"):
            v = getattr(lim, field)
            if v is not None and v < 1:
                raise ConfigError(f"rate_limits.{where}.{field}: must be >= 1 (or left out)")
    for m in rl.models:
        if not is_model(m):
            raise ConfigError(f"rate_limits.models.{m}: not a configured model")
