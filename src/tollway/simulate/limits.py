"""A provider's rate limit, emulated: requests and tokens per minute over a sliding
60 s window, and the headers OpenAI and Anthropic report it with.

A request over the limit is refused (429) and does not count. `reset` is when the
oldest request in the window leaves it, i.e. when room next frees up: a client that
holds its sends until then (as the gateway's pacing does on remaining=0) fits.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

WINDOW = 60.0


@dataclass(slots=True, frozen=True)
class Quota:
    limit: int
    remaining: int
    reset: float  # seconds until the oldest request leaves the window (0: empty)


@dataclass(slots=True, frozen=True)
class LimitView:
    requests: Quota | None
    tokens: Quota | None


class Limiter:
    """The window log of admitted requests: (time, tokens)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._log: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def admit(self, rpm: int | None, tpm: int | None, tokens: int) -> float | None:
        """Count the request if it fits (None); otherwise the seconds until it would.
        A request larger than the whole token limit fits only an empty window."""
        now = self.clock()
        self._expire(now)
        log = self._log
        at = now
        if rpm is not None and len(log) >= rpm:
            at = max(at, log[len(log) - rpm][0] + WINDOW)
        if tpm is not None:
            excess = self._tokens + min(tokens, tpm) - tpm
            freed = 0
            for t, n in log:
                if freed >= excess:
                    break
                freed += n
                at = max(at, t + WINDOW)
        if at > now:
            return at - now
        log.append((now, tokens))
        self._tokens += tokens
        return None

    def view(self, rpm: int | None, tpm: int | None) -> LimitView:
        now = self.clock()
        self._expire(now)
        reset = self._log[0][0] + WINDOW - now if self._log else 0.0
        return LimitView(
            None if rpm is None else Quota(rpm, max(0, rpm - len(self._log)), reset),
            None if tpm is None else Quota(tpm, max(0, tpm - self._tokens), reset))

    def _expire(self, now: float) -> None:
        while self._log and self._log[0][0] <= now - WINDOW:
            self._tokens -= self._log.popleft()[1]


def go_duration(secs: float) -> str:
    """Seconds as OpenAI writes them ("20ms", "1.5s", "1m0s"), rounded up to the
    millisecond so that waiting exactly this long is enough."""
    ms = math.ceil(secs * 1000 - 1e-6) if secs > 0 else 0
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    minutes, ms = divmod(ms, 60_000)
    rest = f"{ms / 1000:g}s"
    return f"{minutes}m{rest}" if minutes else rest


def openai_headers(view: LimitView) -> dict[str, str]:
    out: dict[str, str] = {}
    for kind, q in (("requests", view.requests), ("tokens", view.tokens)):
        if q is not None:
            out[f"x-ratelimit-limit-{kind}"] = str(q.limit)
            out[f"x-ratelimit-remaining-{kind}"] = str(q.remaining)
            out[f"x-ratelimit-reset-{kind}"] = go_duration(q.reset)
    return out


def anthropic_headers(view: LimitView, wall_now: float) -> dict[str, str]:
    """Anthropic gives the reset as an RFC 3339 time, to the second (rounded up)."""
    out: dict[str, str] = {}
    for kind, q in (("requests", view.requests), ("tokens", view.tokens)):
        if q is not None:
            when = datetime.fromtimestamp(math.ceil(wall_now + q.reset), UTC)
            out[f"anthropic-ratelimit-{kind}-limit"] = str(q.limit)
            out[f"anthropic-ratelimit-{kind}-remaining"] = str(q.remaining)
            out[f"anthropic-ratelimit-{kind}-reset"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out
