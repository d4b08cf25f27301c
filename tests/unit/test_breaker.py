"""The per-deployment circuit breaker, driven by a fake clock."""

from __future__ import annotations

import pytest

from tollway.config import BreakerConfig
from tollway.routing.breaker import PROBE_WAIT_HINT, Breaker, BreakerState


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


CFG = BreakerConfig(window_seconds=30.0, min_requests=10, failure_rate=0.5,
                    cooldown_seconds=10.0, half_open_probes=3)


def make(cfg: BreakerConfig = CFG) -> tuple[Breaker, Clock]:
    clock = Clock()
    return Breaker(cfg, clock=clock), clock


def state(b: Breaker) -> str:
    # A call, not the property: mypy would narrow `b.state` across the clock moving.
    return b.state


def calls(b: Breaker, ok: int = 0, failed: int = 0) -> None:
    for outcome in [True] * ok + [False] * failed:
        assert b.allow()
        b.record(outcome)


def trip(b: Breaker) -> None:
    calls(b, failed=CFG.min_requests)
    assert state(b) == "open"


def test_starts_closed_and_allows() -> None:
    b, _ = make()
    assert state(b) == "closed"
    assert b.allow()
    assert b.retry_in() == 0.0
    assert b.snapshot() == BreakerState("closed", 0, 0, None, 0.0)


def test_failures_below_min_requests_do_not_open() -> None:
    b, _ = make()
    calls(b, failed=CFG.min_requests - 1)
    assert state(b) == "closed"
    assert b.snapshot().failures == CFG.min_requests - 1
    calls(b, failed=1)
    assert state(b) == "open"


def test_rate_below_threshold_stays_closed_and_at_threshold_opens() -> None:
    b, _ = make()
    calls(b, ok=6, failed=4)  # 40% < 50%
    assert state(b) == "closed"
    calls(b, failed=2)  # 6/12 = 50%
    assert state(b) == "open"


def test_a_rate_that_is_not_exact_in_binary_still_trips_at_the_threshold() -> None:
    b, _ = make(BreakerConfig(min_requests=10, failure_rate=0.3))
    calls(b, ok=7, failed=2)
    assert state(b) == "closed"
    calls(b, failed=1)  # 3 of 10
    assert state(b) == "open"


def test_successes_alone_never_open_even_with_zero_rate() -> None:
    b, _ = make(BreakerConfig(min_requests=1, failure_rate=0.0))
    calls(b, ok=50)
    assert state(b) == "closed"


def test_open_refuses_during_cooldown_with_retry_in() -> None:
    b, clock = make()
    trip(b)
    opened = clock.now
    assert not b.allow()
    assert b.retry_in() == pytest.approx(10.0)
    clock.now += 7.5
    assert state(b) == "open"
    assert not b.allow()
    assert b.retry_in() == pytest.approx(2.5)
    snap = b.snapshot()
    assert (snap.state, snap.opened_at) == ("open", opened)
    assert snap.retry_in == pytest.approx(2.5)
    clock.now = opened + CFG.cooldown_seconds
    assert state(b) == "half_open"
    assert b.retry_in() == 0.0


def test_half_open_admits_exactly_the_probes() -> None:
    b, clock = make()
    trip(b)
    clock.now += CFG.cooldown_seconds
    assert [b.allow() for _ in range(CFG.half_open_probes + 2)] == [True] * 3 + [False] * 2
    assert b.retry_in() == PROBE_WAIT_HINT
    # A success frees no slot: the limit is per half-open period, not only in flight.
    b.record(True)
    assert state(b) == "half_open"
    assert not b.allow()


def test_one_probe_failure_reopens_with_a_fresh_cooldown() -> None:
    b, clock = make()
    trip(b)
    clock.now += CFG.cooldown_seconds
    assert b.allow() and b.allow()
    b.record(True)
    clock.now += 2.0
    b.record(False)
    assert state(b) == "open"
    assert b.snapshot().opened_at == clock.now
    assert not b.allow()
    assert b.retry_in() == pytest.approx(CFG.cooldown_seconds)
    clock.now += CFG.cooldown_seconds
    assert state(b) == "half_open"
    assert [b.allow() for _ in range(4)] == [True, True, True, False]


def test_probe_successes_close_and_clear_the_window() -> None:
    b, clock = make()
    trip(b)
    clock.now += CFG.cooldown_seconds
    for _ in range(CFG.half_open_probes):
        assert b.allow()
    for _ in range(CFG.half_open_probes - 1):
        b.record(True)
        assert state(b) == "half_open"
    b.record(True)
    assert b.snapshot() == BreakerState("closed", 0, 0, None, 0.0)
    # The old failures are gone: it takes a full min_requests of fresh ones to reopen.
    calls(b, failed=CFG.min_requests - 1)
    assert state(b) == "closed"


def test_cancel_frees_a_probe_slot() -> None:
    b, clock = make()
    trip(b)
    clock.now += CFG.cooldown_seconds
    assert b.allow() and b.allow() and b.allow()
    assert not b.allow()
    b.cancel()
    assert b.retry_in() == 0.0
    assert b.allow()
    assert not b.allow()


def test_cancel_outside_half_open_changes_nothing() -> None:
    b, _ = make()
    assert b.allow()
    b.cancel()
    assert b.snapshot() == BreakerState("closed", 0, 0, None, 0.0)
    trip(b)
    b.cancel()
    assert state(b) == "open"


def test_results_of_calls_started_before_opening_are_ignored() -> None:
    b, clock = make()
    assert b.allow()  # started while closed, finishes later
    trip(b)
    b.record(True)  # while open: the decision is already made
    assert state(b) == "open"
    clock.now += CFG.cooldown_seconds
    b.record(False)  # half-open with no probe in flight: not a probe's result
    assert state(b) == "half_open"
    assert [b.allow() for _ in range(4)] == [True, True, True, False]


def test_failures_within_the_window_add_up() -> None:
    b, clock = make()
    calls(b, failed=9)
    clock.now += 20.0
    calls(b, failed=1)
    assert state(b) == "open"


def test_old_failures_slide_out_of_the_window() -> None:
    b, clock = make()
    calls(b, failed=9)
    clock.now += CFG.window_seconds
    assert b.snapshot().calls == 0
    calls(b, failed=1)
    assert state(b) == "closed"
    assert (b.snapshot().calls, b.snapshot().failures) == (1, 1)


def test_window_slides_gradually() -> None:
    b, clock = make()
    calls(b, failed=3)
    clock.now += 10.0
    calls(b, ok=6)
    clock.now += 10.0
    assert b.snapshot() == BreakerState("closed", 9, 3, None, 0.0)
    clock.now += 10.5  # the first three are now older than the window, the rest are not
    assert (b.snapshot().calls, b.snapshot().failures) == (6, 0)
    calls(b, failed=3)
    assert state(b) == "closed"  # 3 of 9 (6 of 12 had the old ones stayed)
    calls(b, failed=2)
    assert state(b) == "closed"  # 5 of 11
    calls(b, failed=1)
    assert state(b) == "open"  # 6 of 12
