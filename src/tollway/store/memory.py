"""The parts of a store that live in memory: budget counters and holds, rate-limit
windows and once-marks. The embedded store's own (one process is the only writer, and
no await separates a check from its increment, so a plain dict is atomic), and the
shared store's fallback for rate limits while Redis is unreachable."""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence

from tollway.store.base import Claim, LiveHold, RebuildClaim, Reservation


class MemoryBudgets:
    # Recently settled hold ids, so a repeated settle is refused. A hold settles within
    # hold_seconds, so a bounded memory of them is enough.
    SETTLED_MEMORY = 50_000

    def __init__(self, spent: dict[str, float] | None = None) -> None:
        self._spent: dict[str, float] = spent or {}
        self._held: dict[str, float] = {}
        self._holds: dict[str, Sequence[Claim]] = {}
        self._expiry: list[tuple[float, str]] = []  # heap of (expires_at, hold id)
        self._settled: dict[str, None] = {}  # insertion-ordered: oldest first
        self.dirty: set[str] = set()  # counters changed since they were persisted

    async def reserve(self, hold_id: str, claims: Sequence[Claim], expires_at: float,
                      now: float) -> Reservation:
        self._expire(now)
        spent, held = self._spent, self._held
        levels = [spent.get(c.counter, 0.0) + held.get(c.counter, 0.0) for c in claims]
        if hold_id in self._settled:  # its request finished first: nothing to take
            return Reservation(levels)
        for i, (c, level) in enumerate(zip(claims, levels, strict=True)):
            if level + c.amount > c.limit * (1 + 1e-12):
                return Reservation(levels, refused=i)
        for c in claims:
            held[c.counter] = held.get(c.counter, 0.0) + c.amount
        self._holds[hold_id] = claims
        heapq.heappush(self._expiry, (expires_at, hold_id))
        return Reservation([lvl + c.amount for lvl, c in zip(levels, claims, strict=True)])

    async def settle(self, hold_id: str, charges: Sequence[tuple[str, float]]) -> bool:
        if hold_id in self._settled:
            return False
        self._settled[hold_id] = None
        if len(self._settled) > self.SETTLED_MEMORY:
            del self._settled[next(iter(self._settled))]
        hold = self._holds.pop(hold_id, None)
        if hold is not None:
            self._release(hold)
        for counter, amount in charges:
            if amount:
                self._spent[counter] = self._spent.get(counter, 0.0) + amount
                self.dirty.add(counter)
        return True

    async def levels(self, counters: Sequence[str], now: float) -> list[float]:
        self._expire(now)
        return [self._spent.get(c, 0.0) + self._held.get(c, 0.0) for c in counters]

    async def add(self, counter: str, amount: float) -> float:
        level = self._spent.get(counter, 0.0) + amount
        self._spent[counter] = level
        self.dirty.add(counter)
        return level

    # Memory loses its counters only with its process (and the holds with them): they
    # are always current, and nothing is ever rebuilt.

    async def claim_rebuild(self, token: str, lease: float) -> RebuildClaim:
        return "current"

    async def restore(self, holds: Sequence[LiveHold], now: float) -> None:
        pass

    async def lost_settles(self) -> set[str]:
        return set()

    async def commit_rebuild(self, token: str, counters: Sequence[tuple[str, float]]
                             ) -> bool:
        return False

    async def release_rebuild(self, token: str) -> None:
        pass

    def take_dirty(self) -> list[tuple[str, float]]:
        out = [(c, self._spent[c]) for c in self.dirty]
        self.dirty = set()
        return out

    def _release(self, claims: Sequence[Claim]) -> None:
        held = self._held
        for c in claims:
            left = held.get(c.counter, 0.0) - c.amount
            if left > 1e-12:
                held[c.counter] = left
            else:
                held.pop(c.counter, None)

    def _expire(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, hold_id = heapq.heappop(heap)
            hold = self._holds.pop(hold_id, None)
            if hold is not None:
                self._release(hold)


class _Entry:
    __slots__ = ("amount", "id", "t")

    def __init__(self, t: float, entry_id: str, amount: float) -> None:
        self.t = t
        self.id = entry_id
        self.amount = amount


class _Log:
    """One counter's window: its entries oldest first, their sum, and each by id
    (for adjust)."""

    __slots__ = ("by_id", "entries", "total", "window")

    def __init__(self, window: float) -> None:
        self.entries: deque[_Entry] = deque()
        self.by_id: dict[str, _Entry] = {}
        self.total = 0.0
        self.window = window

    def expire(self, now: float) -> None:
        # `t + window <= now`, the same sum free_at returns, so an entry leaves at
        # exactly the time we told the caller (now - window would round differently).
        entries, window = self.entries, self.window
        while entries and entries[0].t + window <= now:
            e = entries.popleft()
            self.total -= e.amount
            if self.by_id.get(e.id) is e:
                del self.by_id[e.id]
        if not entries:
            self.total = 0.0  # no float drift survives an empty window


class MemoryLimits:
    """Sliding-window logs in memory. Atomic for the same reason as MemoryBudgets: no
    await between checking and recording. Memory follows the traffic of one window:
    a counter drops its expired entries whenever it is used, and a sweep trims the
    others and drops the empty ones. The sweep walks every counter, so it runs only
    after `sweep_every` takes and after as many takes as there are counters (O(1) per
    take) or a window since the last one (at most one walk per window)."""

    def __init__(self, sweep_every: int = 1000) -> None:
        self._logs: dict[str, _Log] = {}
        self._sweep_every = sweep_every
        self._takes = 0
        self._swept_at = -math.inf

    async def take(self, entry_id: str, claims: Sequence[Claim], window: float,
                   now: float) -> Reservation:
        self._takes += 1
        if self._takes >= self._sweep_every and (
                self._takes >= len(self._logs) or now >= self._swept_at + window):
            self._sweep(now)
        logs = self._logs
        found: list[_Log] = []
        for c in claims:
            log = logs.get(c.counter)
            if log is None:
                log = logs[c.counter] = _Log(window)
            log.window = window
            log.expire(now)
            found.append(log)
        levels = [log.total for log in found]
        for i, (c, level) in enumerate(zip(claims, levels, strict=True)):
            if level + c.amount > c.limit * (1 + 1e-12):
                return Reservation(levels, refused=i)
        for c, log in zip(claims, found, strict=True):
            entries = log.entries
            # A caller that read its clock before an await may come in a little late:
            # recording it at the newest entry's time keeps each log sorted (and counts
            # it a moment longer, never shorter).
            e = _Entry(max(now, entries[-1].t) if entries else now, entry_id, c.amount)
            entries.append(e)
            log.by_id[entry_id] = e
            log.total += c.amount
        return Reservation([lvl + c.amount for lvl, c in zip(levels, claims, strict=True)])

    async def adjust(self, entry_id: str, amounts: Sequence[tuple[str, float]]) -> None:
        for counter, amount in amounts:
            log = self._logs.get(counter)
            e = log.by_id.get(entry_id) if log is not None else None
            if log is not None and e is not None:
                log.total += amount - e.amount
                e.amount = amount

    async def free_at(self, counter: str, need: float, limit: float, window: float,
                      now: float) -> float:
        if need > limit * (1 + 1e-12):
            return math.inf
        log = self._logs.get(counter)
        if log is None:
            return now
        log.window = window
        log.expire(now)
        excess = log.total + need - limit * (1 + 1e-12)
        if excess <= 0:
            return now
        for e in log.entries:  # capacity comes back as the oldest entries leave
            excess -= e.amount
            if excess <= 0:
                return e.t + window
        return math.inf  # unreachable while need <= limit

    def size(self) -> tuple[int, int]:
        """(counters, entries) held: what the memory bound is about."""
        return len(self._logs), sum(len(log.entries) for log in self._logs.values())

    def _sweep(self, now: float) -> None:
        self._takes = 0
        self._swept_at = now
        idle = []
        for name, log in self._logs.items():
            log.expire(now)
            if not log.entries:
                idle.append(name)
        for name in idle:
            del self._logs[name]


class MemoryOnce:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    async def first(self, name: str, until: float) -> bool:
        if name in self._until:
            return False
        self._until[name] = until
        return True
