"""The `routing` section (retries and circuit breakers, which an alias may override) and
a deployment's outbound pacing."""

from __future__ import annotations

import msgspec

from tollway.errors import ConfigError


class RetryConfig(msgspec.Struct, forbid_unknown_fields=True):
    """One retry layer for every upstream call (never stacked on an SDK's own)."""

    # Upstream calls per request, and the request's bound across them (no retry starts
    # after it; one running then is cut) — except each pool's first call, always made.
    max_attempts: int = 3
    max_seconds: float = 60.0
    base_delay: float = 0.2  # full jitter: sleep uniform(0, min(max_delay, base * 2^n))
    max_delay: float = 5.0
    # A Retry-After up to this is waited out on the same deployment; a longer one
    # sends the request elsewhere at once.
    max_retry_after: float = 10.0
    # Retries may be at most this fraction of an alias's requests, plus `budget_floor`
    # at start: an outage cannot become a retry storm.
    budget: float = 0.2
    budget_floor: float = 3.0


class BreakerConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Per deployment: opens when `failure_rate` of the calls in the last
    `window_seconds` failed (with at least `min_requests` calls); after
    `cooldown_seconds` lets `half_open_probes` calls through; closes when they succeed."""

    window_seconds: float = 30.0
    min_requests: int = 10
    failure_rate: float = 0.5
    cooldown_seconds: float = 10.0
    half_open_probes: int = 3


class PacingConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Outbound limits of one deployment (the provider's RPM/TPM for our key).
    Requests beyond them wait in a bounded queue; a full queue, or a wait longer
    than `max_wait_seconds`, is answered 503 with Retry-After at once."""

    rpm: int | None = None
    tpm: int | None = None
    learn: bool = True  # also obey the provider's x-ratelimit-* response headers
    max_queue: int = 100
    max_wait_seconds: float = 5.0


class RoutingConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Server-wide defaults; an alias may override `retry` and `breaker`."""

    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)


def check_routing(routing: RoutingConfig, retries: dict[str, RetryConfig],
                  breakers: dict[str, BreakerConfig]) -> None:
    """`retries`, `breakers`: the aliases' own (`models.NAME.retry` / `.breaker`), by alias."""
    checked_retries = [("routing.retry", routing.retry)] + [
        (f"models.{a}.retry", r) for a, r in retries.items()]
    for where, r in checked_retries:
        if r.max_attempts < 1 or r.max_seconds <= 0 or r.budget < 0:
            raise ConfigError(f"{where}: max_attempts >= 1, max_seconds > 0, budget >= 0")
    checked_breakers = [("routing.breaker", routing.breaker)] + [
        (f"models.{a}.breaker", b) for a, b in breakers.items()]
    for where, b in checked_breakers:
        if not 0 < b.failure_rate <= 1 or b.min_requests < 1 or b.half_open_probes < 1:
            raise ConfigError(f"{where}: failure_rate in (0, 1], min_requests >= 1, "
                              "half_open_probes >= 1")
