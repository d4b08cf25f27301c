"""When to try an upstream call again, how long to wait first, and how many retries
an alias can afford.

Retried: 408, 409, 429, 5xx, connection failures and timeouts. Never: 400, 401, 403,
404, 422 and other client errors (they would fail again, and cost again). A
context-window overflow is not retried either, but may move to a larger model.
"""

from __future__ import annotations

import random
import re

from tollway.config import RetryConfig
from tollway.errors import TollwayError

_OVERFLOW = re.compile(r"context (length|window)|maximum context|prompt is too long|too many "
                       r"tokens|reduce the length", re.IGNORECASE)


def retryable(e: TollwayError) -> bool:
    """Could another attempt (here or elsewhere) succeed?"""
    status = e.upstream_status
    if status is not None:
        return status in (408, 409, 429) or status >= 500
    # Ours: a connection failure or timeout talking upstream (502/504), or an
    # upstream that cannot take more right now (503 from pacing or a breaker).
    return e.status in (502, 503, 504)


def counts_against_deployment(e: TollwayError) -> bool:
    """Does this failure say the deployment is unhealthy (for its circuit breaker)?
    Our own back-pressure (pacing) does not: the deployment was never called."""
    if e.upstream_status is not None:
        return retryable(e)
    return e.status in (502, 504)


def context_overflow(e: TollwayError) -> bool:
    return e.upstream_status in (400, 413) and bool(_OVERFLOW.search(e.message))


def backoff(attempt: int, cfg: RetryConfig, rng: random.Random,
            retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1-based) of the same deployment:
    the upstream's Retry-After when it gave one, else full jitter (AWS's "exponential
    backoff and jitter": a uniform draw under the exponential cap spreads retries of
    many clients instead of synchronising them)."""
    if retry_after is not None:
        return retry_after
    cap = min(cfg.max_delay, cfg.base_delay * 2 ** (attempt - 1))
    return rng.uniform(0, cap)


class RetryBudget:
    """Retries of one alias may be at most `budget` of its requests (plus a small
    floor to start with): a token bucket that each request fills by `budget` and each
    retry drains by one. Moving on to a deployment not tried yet for this request is
    not a retry — it sends no more than one call per request to any upstream — so
    only repeated calls to the same deployments spend the budget."""

    __slots__ = ("cap", "rate", "tokens")

    def __init__(self, cfg: RetryConfig) -> None:
        self.rate = cfg.budget
        self.tokens = cfg.budget_floor
        self.cap = max(cfg.budget_floor, 10.0)

    def deposit(self) -> None:
        self.tokens = min(self.cap, self.tokens + self.rate)

    def take(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
