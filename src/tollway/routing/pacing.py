"""Outbound pacing of one deployment: send no faster than the provider lets our key.

Limits: the configured `rpm`/`tpm`, lowered by what the provider's rate-limit
headers say (`learn`), as a sliding window log over the last 60 s. A send that does
not fit waits in a FIFO queue; the head is released by a timer set for the moment it
fits (or at once when `settle`/`learn` make room), never by polling. The queue is
bounded twice: at most `max_queue` waiters, and no one waits longer than
`max_wait_seconds`. A send that would exceed either is refused at once with 503 and
Retry-After, so an overloaded upstream turns into fast back-pressure, not a hang.

Token counts are estimates at send time (input + max output); `settle` replaces the
estimate with the real usage once it is known. Used from one event loop: no locks.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from tollway.config import PacingConfig
from tollway.errors import Unavailable

WINDOW = 60.0  # seconds: provider limits are per minute


@dataclass(slots=True, eq=False)
class Pass:
    """One send let through: settle it with the real token count."""

    tokens: int
    at: float  # when it was sent (the pacer's clock)
    counted: bool = True  # still in the window log
    settled: bool = False


@dataclass(slots=True, frozen=True)
class PacerState:
    queued: int
    sent_in_window: int
    tokens_in_window: int
    rpm: int | None  # in force: the configured or the learned limit, whichever is lower
    tpm: int | None
    learned_rpm: int | None
    learned_tpm: int | None
    held_seconds: float  # until the provider's reset, when it said nothing is left


@dataclass(slots=True, eq=False)
class _Waiter:
    tokens: int
    deadline: float
    fut: asyncio.Future[Pass]


@dataclass(slots=True)
class _Left:
    """What the provider said remains until its reset, minus what we sent since."""

    left: int
    reset_at: float


class Pacer:
    def __init__(self, cfg: PacingConfig, clock: Callable[[], float] = time.monotonic,
                 *, wall: Callable[[], float] = time.time, name: str = "the upstream") -> None:
        self.cfg = cfg
        self.clock = clock
        self.wall = wall  # Anthropic's resets are wall-clock times
        self.name = name
        self._log: deque[Pass] = deque()
        self._tokens = 0  # sum of the log's tokens
        self._waiters: deque[_Waiter] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._learned_rpm: int | None = None
        self._learned_tpm: int | None = None
        self._rpm = cfg.rpm
        self._tpm = cfg.tpm
        self._requests_left: _Left | None = None
        self._tokens_left: _Left | None = None

    @property
    def active(self) -> bool:
        """Any limit configured or learned: an inactive pacer lets everything through."""
        return (self._rpm is not None or self._tpm is not None
                or self._requests_left is not None or self._tokens_left is not None)

    async def acquire(self, tokens: int) -> Pass:
        """Wait (FIFO) until this send fits; raises Unavailable at once when it would
        not fit within `max_wait_seconds` or the queue is full."""
        now = self.clock()
        if not self.active:
            return Pass(tokens, now, counted=False)
        self._expire(now)
        ahead = len(self._waiters)
        ahead_tokens = sum(w.tokens for w in self._waiters) if ahead else 0
        ready = self._ready_at(ahead, ahead_tokens, tokens, now)
        if not ahead and ready <= now:
            return self._send(tokens, now)
        wait = ready - now
        if ahead >= self.cfg.max_queue:
            raise self._refusal(wait, "pacing_queue_full", f"{ahead} requests already wait")
        if wait > self.cfg.max_wait_seconds:
            raise self._refusal(wait, "pacing_wait_too_long",
                                f"the next send fits in {wait:.1f}s")
        w = _Waiter(tokens, now + self.cfg.max_wait_seconds,
                    asyncio.get_running_loop().create_future())
        self._waiters.append(w)
        self._wake()
        try:
            return await w.fut
        except asyncio.CancelledError:
            self._leave(w)
            raise

    def settle(self, p: Pass, actual_tokens: int | None) -> None:
        """Replace the send's estimate with its real token count (None: keep it)."""
        if p.settled:
            return
        p.settled = True
        if actual_tokens is None or actual_tokens == p.tokens:
            return
        if p.counted:
            self._tokens += actual_tokens - p.tokens
        p.tokens = actual_tokens
        if self._waiters:
            self._wake()

    def learn(self, headers: Mapping[str, str]) -> None:
        """Obey the provider's rate-limit headers (OpenAI's x-ratelimit-* or Anthropic's
        anthropic-ratelimit-*): adopt a limit lower than ours, and hold sends until
        the reset when what is left does not cover them. Bad values are ignored."""
        if not self.cfg.learn or not headers:
            return
        now = self.clock()
        for kind in ("requests", "tokens"):
            limit = _int(headers.get(f"x-ratelimit-limit-{kind}")
                         or headers.get(f"anthropic-ratelimit-{kind}-limit"))
            if limit is not None and limit > 0:
                if kind == "requests":
                    self._learned_rpm = limit
                else:
                    self._learned_tpm = limit
            left = _int(headers.get(f"x-ratelimit-remaining-{kind}")
                        or headers.get(f"anthropic-ratelimit-{kind}-remaining"))
            if left is None:
                continue
            reset = _reset_seconds(headers.get(f"x-ratelimit-reset-{kind}")
                                   or headers.get(f"anthropic-ratelimit-{kind}-reset"),
                                   self.wall())
            state = _Left(left, now + reset) if reset is not None and reset > 0 else None
            if kind == "requests":
                self._requests_left = state
            else:
                self._tokens_left = state
        self._rpm = _lower(self.cfg.rpm, self._learned_rpm)
        self._tpm = _lower(self.cfg.tpm, self._learned_tpm)
        if self._waiters:
            self._wake()

    def snapshot(self) -> PacerState:
        now = self.clock()
        self._expire(now)
        held = 0.0
        for left in (self._requests_left, self._tokens_left):
            if left is not None and left.left <= 0 and left.reset_at > now:
                held = max(held, left.reset_at - now)
        return PacerState(len(self._waiters), len(self._log), self._tokens, self._rpm,
                          self._tpm, self._learned_rpm, self._learned_tpm, held)

    def wake(self) -> None:
        """Re-check the queue now. The timer does this by itself; a test that moves a
        fake clock calls it."""
        self._wake()

    # -- internals -----------------------------------------------------------------------

    def _send(self, tokens: int, now: float) -> Pass:
        p = Pass(tokens, now)
        self._log.append(p)
        self._tokens += tokens
        if self._requests_left is not None:
            self._requests_left.left -= 1
        if self._tokens_left is not None:
            self._tokens_left.left -= tokens
        return p

    def _unsend(self, p: Pass) -> None:
        if p.counted:
            self._log.remove(p)
            p.counted = False
            self._tokens -= p.tokens
        if self._requests_left is not None:
            self._requests_left.left += 1
        if self._tokens_left is not None:
            self._tokens_left.left += p.tokens

    def _expire(self, now: float) -> None:
        log = self._log
        while log and log[0].at <= now - WINDOW:
            p = log.popleft()
            p.counted = False
            self._tokens -= p.tokens
        if self._requests_left is not None and self._requests_left.reset_at <= now:
            self._requests_left = None
        if self._tokens_left is not None and self._tokens_left.reset_at <= now:
            self._tokens_left = None

    def _ready_at(self, ahead: int, ahead_tokens: int, tokens: int, now: float) -> float:
        """When a send of `tokens` fits, behind `ahead` queued sends of `ahead_tokens`
        (assumed to go first, in order). Exact for the head of the queue; for a later
        place, a lower bound when the queue alone overfills a window."""
        at = now
        log = self._log
        if self._rpm is not None:
            must_expire = len(log) + ahead + 1 - self._rpm
            if must_expire > len(log):
                at = max(at, now + WINDOW)
            elif must_expire > 0:
                at = max(at, log[must_expire - 1].at + WINDOW)
        if self._tpm is not None:
            # A send larger than the whole limit goes alone, into an empty window.
            need = ahead_tokens + min(tokens, self._tpm)
            excess = self._tokens + need - self._tpm
            if need > self._tpm:
                at = max(at, now + WINDOW)
            elif excess > 0:
                freed = 0
                for p in log:
                    freed += p.tokens
                    if freed >= excess:
                        at = max(at, p.at + WINDOW)
                        break
        left = self._requests_left
        if left is not None and left.reset_at > now and left.left < ahead + 1:
            at = max(at, left.reset_at)
        left = self._tokens_left
        if left is not None and left.reset_at > now and left.left < ahead_tokens + tokens:
            at = max(at, left.reset_at)
        return at

    def _wake(self) -> None:
        """Release the queue's head while it fits; refuse a head that cannot fit before
        its deadline; otherwise set one timer for when the head fits."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self.clock()
        self._expire(now)
        while self._waiters:
            w = self._waiters[0]
            if w.fut.done():  # its caller left; _leave removes it too
                self._waiters.popleft()
                continue
            ready = self._ready_at(0, 0, w.tokens, now)
            if ready <= now:
                self._waiters.popleft()
                w.fut.set_result(self._send(w.tokens, now))
                continue
            if ready > w.deadline:  # the provider tightened its limits while it waited
                self._waiters.popleft()
                w.fut.set_exception(self._refusal(ready - now, "pacing_wait_too_long",
                                                  f"the next send fits in {ready - now:.1f}s"))
                continue
            self._timer = w.fut.get_loop().call_later(ready - now, self._wake)
            return

    def _leave(self, w: _Waiter) -> None:
        """A waiter's caller was cancelled: free its place, or give back its send if it
        had just been released."""
        if w in self._waiters:
            self._waiters.remove(w)
        elif w.fut.done() and not w.fut.cancelled() and w.fut.exception() is None:
            self._unsend(w.fut.result())
        self._wake()

    def _refusal(self, wait: float, code: str, why: str) -> Unavailable:
        return Unavailable(f"Pacing: {self.name} is at its rate limit and {why}; retry later.",
                           code=code, retry_after=max(wait, 0.0))


def _lower(configured: int | None, learned: int | None) -> int | None:
    if configured is None:
        return learned
    return configured if learned is None else min(configured, learned)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")


def _reset_seconds(value: str | None, wall_now: float) -> float | None:
    """Seconds until a reset: a Go-style duration as OpenAI sends it ("1s", "6m0s",
    "20ms"), plain seconds, or an RFC 3339 time as Anthropic sends it."""
    if not value:
        return None
    value = value.strip()
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        return sum(float(n) * _UNITS[u] for n, u in parts)
    try:
        secs = float(value)
        return secs if math.isfinite(secs) else None
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp() - wall_now
