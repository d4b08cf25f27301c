"""Circuit breaker for one upstream deployment: stop sending calls to a deployment
that is failing, and let a few probes through after a cooldown to see if it is back.

closed    -> open       when, over the calls recorded in the last `window_seconds`,
                        there are >= `min_requests` and failures/calls >= `failure_rate`
open      -> half_open  once `cooldown_seconds` have passed (computed from the clock)
half_open -> open       on any probe failure (a fresh cooldown)
half_open -> closed     when `half_open_probes` probes have succeeded (window cleared)

Pure: no I/O, time comes from the injected clock. Not thread-safe by design: the
gateway calls it from a single event loop and no method awaits, so each call runs
to completion without interleaving and no lock is needed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tollway.config import BreakerConfig

State = Literal["closed", "open", "half_open"]

# The window is kept as this many buckets of window_seconds/BUCKETS each, so memory is
# bounded whatever the traffic (30 one-second buckets with the default 30 s window).
BUCKETS = 30

# retry_in() while every half-open probe slot is taken: the real answer depends on
# probes still in flight. Probes settle quickly, and a 0 would invite clients to
# retry at once, so a short hint is given instead.
PROBE_WAIT_HINT = 1.0


@dataclass(slots=True, frozen=True)
class BreakerState:
    """A point-in-time view for /health/ready and metrics."""

    state: State
    calls: int  # calls recorded in the window (only while closed; cleared on closing)
    failures: int  # of which failed
    opened_at: float | None  # clock time of the latest opening; None while closed
    retry_in: float  # seconds until a call may be allowed


class Breaker:
    __slots__ = ("_buckets", "_calls", "_cfg", "_clock", "_failures", "_opened_at",
                 "_probes_in_flight", "_probes_ok", "_probes_used", "_state", "_width")

    def __init__(self, cfg: BreakerConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._clock = clock
        self._width = max(cfg.window_seconds / BUCKETS, 1e-6)  # a 0 window: no history
        # [bucket index, calls, failures], oldest first; running totals beside them so
        # a record() costs O(1) amortised rather than a sum over the window.
        self._buckets: deque[list[int]] = deque()
        self._calls = 0
        self._failures = 0
        self._state: State = "closed"
        self._opened_at: float | None = None
        # Half-open bookkeeping, reset at each half-open period.
        self._probes_used = 0  # allowed and not cancelled
        self._probes_in_flight = 0  # allowed, neither recorded nor cancelled yet
        self._probes_ok = 0

    @property
    def state(self) -> State:
        return self._advance(self._clock())

    def allow(self) -> bool:
        """May a call start now? A True must be followed by record() or cancel()."""
        state = self._advance(self._clock())
        if state == "closed":
            return True
        if state == "open" or self._probes_used >= self._probes():
            return False
        self._probes_used += 1
        self._probes_in_flight += 1
        return True

    def record(self, ok: bool) -> None:
        """An allowed call finished; ok=False if it failed in a way that counts
        against the deployment (the caller decides: a 400 from a bad request does not)."""
        now = self._clock()
        state = self._advance(now)
        if state == "closed":
            self._add(now, ok)
            calls, failures = self._calls, self._failures  # calls >= 1: one was just added
            # A quotient, not failures >= rate * calls: 0.3 * 10 is 3.0000000000000004.
            if (calls >= self._cfg.min_requests and failures > 0
                    and failures / calls >= self._cfg.failure_rate):
                self._open(now)
        elif state == "half_open":
            # Without a probe in flight this is a call that started before the breaker
            # opened; its outcome says nothing about the deployment's recovery.
            if self._probes_in_flight == 0:
                return
            self._probes_in_flight -= 1
            if not ok:
                self._open(now)
                return
            self._probes_ok += 1
            if self._probes_ok >= self._probes():
                self._close()
        # open: a late result of a call started while closed; the decision is made.

    def cancel(self) -> None:
        """An allowed call was not made after all: give back its half-open probe slot."""
        if self._advance(self._clock()) == "half_open" and self._probes_in_flight > 0:
            self._probes_in_flight -= 1
            self._probes_used -= 1

    def retry_in(self) -> float:
        """Seconds until allow() may say yes; 0 when it would now."""
        return self._retry_in(self._clock())

    def snapshot(self) -> BreakerState:
        now = self._clock()
        state = self._advance(now)
        self._expire(now)
        return BreakerState(state, self._calls, self._failures, self._opened_at,
                            self._retry_in(now))

    # -- internals --------------------------------------------------------------

    def _probes(self) -> int:
        # At least one, or a half-open breaker could never close.
        return max(1, self._cfg.half_open_probes)

    def _advance(self, now: float) -> State:
        if (self._state == "open" and self._opened_at is not None
                and now >= self._opened_at + self._cfg.cooldown_seconds):
            self._state = "half_open"
            self._probes_used = self._probes_in_flight = self._probes_ok = 0
        return self._state

    def _retry_in(self, now: float) -> float:
        state = self._advance(now)
        if state == "open" and self._opened_at is not None:
            return max(0.0, self._opened_at + self._cfg.cooldown_seconds - now)
        if state == "half_open" and self._probes_used >= self._probes():
            return PROBE_WAIT_HINT
        return 0.0

    def _open(self, now: float) -> None:
        self._state = "open"
        self._opened_at = now

    def _close(self) -> None:
        self._state = "closed"
        self._opened_at = None
        self._buckets.clear()
        self._calls = self._failures = 0

    def _add(self, now: float, ok: bool) -> None:
        self._expire(now)
        index = self._index(now)
        if not self._buckets or self._buckets[-1][0] != index:
            self._buckets.append([index, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        self._calls += 1
        if not ok:
            bucket[2] += 1
            self._failures += 1

    def _expire(self, now: float) -> None:
        # Keep the current bucket and the BUCKETS-1 before it: nothing older than
        # window_seconds is ever counted (the oldest bucket may leave a little early).
        oldest = self._index(now) - BUCKETS + 1
        while self._buckets and self._buckets[0][0] < oldest:
            _, calls, failures = self._buckets.popleft()
            self._calls -= calls
            self._failures -= failures

    def _index(self, now: float) -> int:
        return int(now // self._width)
