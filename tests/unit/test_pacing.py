"""Outbound pacing: a fake clock for the window, real asyncio for the queue."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from tollway.config import PacingConfig
from tollway.errors import Unavailable
from tollway.routing.pacing import Pacer, Pass

WALL0 = 1_800_000_000.0  # the fake wall clock's start (2027-01-15T08:00:00Z)


class Clock:
    """A monotonic clock and a wall clock that move together, only when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL0 + self.t - 1000.0


def pacer(clock: Clock, **cfg: Any) -> Pacer:
    return Pacer(PacingConfig(**cfg), clock, wall=clock.wall)


async def turn() -> None:
    """Let every ready task run (no time passes)."""
    for _ in range(5):
        await asyncio.sleep(0)


def advance(clock: Clock, p: Pacer, seconds: float) -> None:
    clock.t += seconds
    p.wake()


async def test_inactive_lets_everything_through() -> None:
    clock = Clock()
    p = pacer(clock)
    assert not p.active
    for _ in range(1000):
        await p.acquire(10_000)
    assert p.snapshot().sent_in_window == 0  # nothing to count against
    p.learn({"x-ratelimit-limit-requests": "500"})
    assert p.active and p.snapshot().rpm == 500


async def test_rpm_over_a_sliding_window() -> None:
    clock = Clock()
    p = pacer(clock, rpm=2, max_wait_seconds=120)
    await p.acquire(1)
    clock.t += 30
    await p.acquire(1)
    third = asyncio.create_task(p.acquire(1))
    await turn()
    assert not third.done() and p.snapshot().queued == 1
    advance(clock, p, 29.9)  # the first send is still in the window
    await turn()
    assert not third.done()
    advance(clock, p, 0.1)  # it leaves: exactly 60 s after it went
    await turn()
    sent = await third
    assert sent.at == clock.t
    assert p.snapshot().sent_in_window == 2


async def test_waiters_go_in_fifo_order() -> None:
    clock = Clock()
    p = pacer(clock, rpm=1, max_wait_seconds=1000)
    await p.acquire(1)
    order: list[str] = []

    async def send(name: str) -> None:
        await p.acquire(1)
        order.append(name)

    tasks = [asyncio.create_task(send(n)) for n in "abc"]
    await turn()
    for expected in (["a"], ["a", "b"], ["a", "b", "c"]):
        advance(clock, p, 60)
        await turn()
        assert order == expected
    await asyncio.gather(*tasks)


async def test_a_small_send_does_not_jump_the_queue() -> None:
    clock = Clock()
    p = pacer(clock, tpm=100, max_wait_seconds=120)
    await p.acquire(60)
    big = asyncio.create_task(p.acquire(80))  # needs the first to leave the window
    await turn()
    small = asyncio.create_task(p.acquire(10))  # would fit now, but the big one is first
    await turn()
    assert not big.done() and not small.done()
    advance(clock, p, 60)
    await turn()
    assert big.done() and small.done()
    assert p.snapshot().tokens_in_window == 90


async def test_full_queue_is_refused_at_once_with_retry_after() -> None:
    clock = Clock()
    p = pacer(clock, rpm=1, max_queue=2, max_wait_seconds=1000)
    await p.acquire(1)
    waiting = [asyncio.create_task(p.acquire(1)) for _ in range(2)]
    await turn()
    with pytest.raises(Unavailable) as e:
        await p.acquire(1)
    assert e.value.status == 503 and e.value.code == "pacing_queue_full"
    assert e.value.retry_after is not None and e.value.retry_after >= 60
    assert (b"retry-after", b"60") in e.value.headers()
    assert p.snapshot().queued == 2
    for t in waiting:
        t.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_wait_longer_than_allowed_is_refused_at_once() -> None:
    clock = Clock()
    p = pacer(clock, rpm=1, max_wait_seconds=5)
    await p.acquire(1)
    with pytest.raises(Unavailable) as e:
        await p.acquire(1)
    assert e.value.code == "pacing_wait_too_long"
    assert e.value.retry_after == pytest.approx(60)
    assert p.snapshot().queued == 0
    clock.t += 56  # 4 s to go: within max_wait, so it queues
    waiter = asyncio.create_task(p.acquire(1))
    await turn()
    assert not waiter.done() and p.snapshot().queued == 1
    advance(clock, p, 4)
    await turn()
    assert isinstance(await waiter, Pass)


async def test_a_cancelled_waiter_frees_its_place() -> None:
    clock = Clock()
    p = pacer(clock, rpm=1, max_queue=1, max_wait_seconds=1000)
    await p.acquire(1)
    first = asyncio.create_task(p.acquire(1))
    await turn()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert p.snapshot().queued == 0
    second = asyncio.create_task(p.acquire(1))  # not refused: the place is free
    await turn()
    assert p.snapshot().queued == 1
    advance(clock, p, 60)
    await turn()
    assert second.done() and not second.cancelled()


async def test_cancelled_just_after_release_gives_the_send_back() -> None:
    clock = Clock()
    p = pacer(clock, rpm=1, max_wait_seconds=1000)
    await p.acquire(1)
    waiter = asyncio.create_task(p.acquire(1))
    await turn()
    advance(clock, p, 60)  # released, but its task has not resumed yet
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert p.snapshot().sent_in_window == 0
    await asyncio.wait_for(p.acquire(1), 1)  # the slot is free at once


async def test_settle_corrects_the_token_estimate() -> None:
    clock = Clock()
    p = pacer(clock, tpm=100, max_wait_seconds=120)
    first = await p.acquire(80)
    waiter = asyncio.create_task(p.acquire(50))
    await turn()
    assert not waiter.done()
    p.settle(first, 30)  # it used less than estimated: room for the waiter now
    await turn()
    assert waiter.done()
    assert p.snapshot().tokens_in_window == 80
    p.settle(first, 90)  # only the first settle counts
    assert p.snapshot().tokens_in_window == 80
    second = waiter.result()
    p.settle(second, None)  # usage unknown: the estimate stays
    assert p.snapshot().tokens_in_window == 80
    advance(clock, p, 60)
    p.settle(await p.acquire(10), 20)
    assert p.snapshot().tokens_in_window == 20


async def test_a_send_larger_than_the_whole_limit_goes_alone() -> None:
    clock = Clock()
    p = pacer(clock, tpm=100, max_wait_seconds=120)
    await p.acquire(10)
    big = asyncio.create_task(p.acquire(500))
    await turn()
    assert not big.done()
    advance(clock, p, 60)  # the window is empty: it goes rather than wait forever
    await turn()
    assert big.done()


async def test_learns_openai_headers() -> None:
    clock = Clock()
    p = pacer(clock, rpm=10, tpm=5000)
    p.learn({"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2",
             "x-ratelimit-reset-requests": "20s", "x-ratelimit-limit-tokens": "1000",
             "x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "6m0s"})
    s = p.snapshot()
    assert (s.rpm, s.tpm, s.learned_rpm, s.learned_tpm) == (3, 1000, 3, 1000)
    assert s.held_seconds == 0
    # A learned limit above the configured one does not raise ours.
    p.learn({"x-ratelimit-limit-requests": "50", "x-ratelimit-limit-tokens": "9000"})
    s = p.snapshot()
    assert (s.rpm, s.tpm, s.learned_rpm) == (10, 5000, 50)


async def test_learns_anthropic_headers_and_holds_until_the_reset() -> None:
    clock = Clock()
    p = pacer(clock, max_wait_seconds=60)
    reset = datetime.fromtimestamp(clock.wall() + 30, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    p.learn({"anthropic-ratelimit-requests-limit": "50",
             "anthropic-ratelimit-requests-remaining": "0",
             "anthropic-ratelimit-requests-reset": reset,
             "anthropic-ratelimit-tokens-limit": "40000",
             "anthropic-ratelimit-tokens-remaining": "39000",
             "anthropic-ratelimit-tokens-reset": reset})
    s = p.snapshot()
    assert (s.rpm, s.tpm) == (50, 40000)
    assert s.held_seconds == pytest.approx(30)
    held = asyncio.create_task(p.acquire(100))
    await turn()
    assert not held.done()
    advance(clock, p, 29)
    await turn()
    assert not held.done()
    advance(clock, p, 1)
    await turn()
    assert held.done() and not held.cancelled()


@pytest.mark.parametrize(("reset", "seconds"), [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("1.5", 1.5)])
async def test_remaining_zero_holds_new_sends_until_the_openai_reset(
        reset: str, seconds: float) -> None:
    clock = Clock()
    p = pacer(clock, max_wait_seconds=5)
    p.learn({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": reset})
    assert p.snapshot().held_seconds == pytest.approx(seconds)
    if seconds > 5:
        with pytest.raises(Unavailable) as e:
            await p.acquire(1)
        assert e.value.retry_after == pytest.approx(seconds)
        return
    held = asyncio.create_task(p.acquire(1))
    await turn()
    assert not held.done()
    advance(clock, p, seconds)
    await turn()
    assert held.done()


async def test_remaining_tokens_short_of_the_send_holds_it() -> None:
    clock = Clock()
    p = pacer(clock, max_wait_seconds=5)
    p.learn({"x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "2s"})
    await p.acquire(60)  # what we send counts against what the provider said is left
    held = asyncio.create_task(p.acquire(60))
    await turn()
    assert not held.done()
    advance(clock, p, 2)
    await turn()
    assert held.done()


async def test_the_timer_releases_a_held_send_without_polling() -> None:
    p = Pacer(PacingConfig(max_wait_seconds=5))  # the real clock
    p.learn({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30ms"})
    assert isinstance(await asyncio.wait_for(p.acquire(1), 2), Pass)


async def test_a_waiter_is_refused_when_the_provider_tightens_past_its_deadline() -> None:
    clock = Clock()
    p = pacer(clock, rpm=1, max_wait_seconds=5)
    await p.acquire(1)
    clock.t += 57
    waiter = asyncio.create_task(p.acquire(1))  # 3 s to go
    await turn()
    p.learn({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m"})
    await turn()
    with pytest.raises(Unavailable) as e:
        await waiter
    assert e.value.retry_after == pytest.approx(60)
    assert p.snapshot().queued == 0


async def test_learning_can_be_turned_off_and_bad_values_are_ignored() -> None:
    clock = Clock()
    off = pacer(clock, learn=False)
    off.learn({"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-reset-requests": "10s"})
    assert not off.active
    p = pacer(clock, rpm=5)
    p.learn({"x-ratelimit-limit-requests": "lots", "x-ratelimit-remaining-requests": "0",
             "x-ratelimit-reset-requests": "soon"})
    s = p.snapshot()
    assert (s.rpm, s.learned_rpm, s.held_seconds) == (5, None, 0)
    await asyncio.wait_for(p.acquire(1), 1)


async def test_snapshot() -> None:
    clock = Clock()
    p = pacer(clock, rpm=1, tpm=1000, max_wait_seconds=100)
    await p.acquire(250)
    waiter = asyncio.create_task(p.acquire(10))
    await turn()
    s = p.snapshot()
    assert (s.queued, s.sent_in_window, s.tokens_in_window, s.rpm, s.tpm) == (1, 1, 250, 1,
                                                                             1000)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
