"""Inbound rate limits: which apply, admitting and refusing, settling tokens, the
x-ratelimit headers, and the sliding window's accuracy and memory under a flood (on a
fake clock: every call is given its `now`)."""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence

import pytest

from tollway.config import RateLimit, RateLimitsConfig
from tollway.errors import RateLimited
from tollway.keys import KeyRecord
from tollway.policy import limits
from tollway.store.base import Claim, Reservation
from tollway.store.memory import MemoryLimits


def key(kid: str = "key_ab12", lineage: str | None = None, **kw: object) -> KeyRecord:
    return KeyRecord(id=kid, hint="tw-abc…wxyz", created_at=0, lineage=lineage or kid,
                     hash="h", **kw)  # type: ignore[arg-type]


def shown(hs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in hs}


# Which limits apply.

def test_a_keys_own_limits_win_metric_by_metric_and_follow_its_lineage() -> None:
    cfg = RateLimitsConfig(keys=RateLimit(rpm=100, tpm=5000))
    got = limits.applicable(cfg, key("key_new", lineage="key_old", rpm=7), None, None, "m")
    assert [(lim.scope, lim.name, lim.metric, lim.limit, lim.counter) for lim in got] == [
        ("key", "key_new", "requests", 7, "rate/key/key_old/requests"),
        ("key", "key_new", "tokens", 5000, "rate/key/key_old/tokens")]
    assert limits.applicable(RateLimitsConfig(), key(), None, None, "m") == []


def test_ip_limits_apply_only_without_a_key() -> None:
    cfg = RateLimitsConfig(ips=RateLimit(rpm=10), users=RateLimit(tpm=900),
                           models={"gpt": RateLimit(rpm=1000)})
    anonymous = limits.applicable(cfg, None, "alice", "10.0.0.1", "gpt")
    assert [lim.counter for lim in anonymous] == [
        "rate/user/alice/tokens", "rate/ip/10.0.0.1/requests", "rate/model/gpt/requests"]
    keyed = limits.applicable(cfg, key(), "alice", "10.0.0.1", "gpt")
    assert [lim.scope for lim in keyed] == ["user", "model"]
    assert [lim.scope for lim in limits.applicable(cfg, None, None, None, "other")] == []


# Durations as OpenAI writes them.

@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (-1, "0s"), (0.0004, "1ms"), (0.02, "20ms"), (0.0201, "21ms"), (1, "1s"),
    (1.5, "1.5s"), (8.64, "8.64s"), (59.9991, "1m0s"), (68.4, "1m8.4s"), (360, "6m0s"),
    (3600, "1h0m0s"), (3725.25, "1h2m5.25s"),
])
def test_durations(seconds: float, text: str) -> None:
    assert limits.duration(seconds) == text


# Admitting, refusing, settling.

async def test_headers_report_the_tightest_limit_of_each_metric() -> None:
    store = MemoryLimits()
    cfg = RateLimitsConfig(users=RateLimit(rpm=3, tpm=1000))
    applied = limits.applicable(cfg, key(rpm=60), "alice", None, "m")
    t = await limits.admit(store, applied, 100, now=0)
    assert shown(limits.headers(t)) == {
        "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "1m0s",  # when capacity next comes back
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": "1m0s"}
    await limits.admit(store, applied, 100, now=10)
    t = await limits.admit(store, applied, 100, now=20.5)
    h = shown(limits.headers(t))
    # Nothing left: the reset is when the next request fits (the first leaves at 60).
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"] == "39.5s"


async def test_a_refusal_names_the_limit_and_says_when_to_come_back() -> None:
    store = MemoryLimits()
    applied = limits.applicable(RateLimitsConfig(), key(rpm=2, tpm=10_000), None, None, "m")
    await limits.admit(store, applied, 10, now=0)
    await limits.admit(store, applied, 10, now=1)
    with pytest.raises(limits.LimitExceeded) as caught:
        await limits.admit(store, applied, 10, now=57)
    err = caught.value
    assert isinstance(err, RateLimited) and err.status == 429
    assert err.message == ("Rate limit reached for key key_ab12: 2 requests per minute; "
                           "try again in 3s.")
    assert err.retry_after == pytest.approx(3)
    h = shown(err.headers())
    assert h["retry-after"] == "3" and h["retry-after-ms"] == "3000"
    assert h["x-ratelimit-limit-requests"] == "2"
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"] == "3s"
    assert h["x-ratelimit-remaining-tokens"] == "9980"
    assert "x-should-retry" not in h
    # Refused means nothing taken: the token counter still holds 20.
    t = await limits.admit(store, applied, 10, now=60)
    assert shown(limits.headers(t))["x-ratelimit-remaining-tokens"] == "9980"


async def test_a_token_refusal_waits_for_every_counter_it_does_not_fit() -> None:
    store = MemoryLimits()
    cfg = RateLimitsConfig(users=RateLimit(tpm=1000), models={"m": RateLimit(tpm=1000)})
    user_only = limits.applicable(cfg, None, "alice", None, "x")
    both = limits.applicable(cfg, None, "alice", None, "m")
    await limits.admit(store, user_only, 600, now=0)
    await limits.admit(store, both, 300, now=10)  # model: 300, user: 900
    model_only = limits.applicable(cfg, None, None, None, "m")
    await limits.admit(store, model_only, 600, now=20)  # model: 900
    with pytest.raises(limits.LimitExceeded) as caught:
        await limits.admit(store, both, 200, now=30)
    # The user has room at 60 (the 600 leave), the model only at 70 (its 300 leave).
    assert caught.value.retry_after == pytest.approx(40)
    assert caught.value.message == (
        "Rate limit reached for user 'alice': 1000 tokens per minute (100 left; this "
        "request could use up to 200, its input plus max_tokens); try again in 40s.")


async def test_a_request_above_a_token_limit_is_told_not_to_retry() -> None:
    applied = limits.applicable(RateLimitsConfig(models={"m": RateLimit(tpm=1000)}), None,
                                None, None, "m")
    with pytest.raises(limits.LimitExceeded) as caught:
        await limits.admit(MemoryLimits(), applied, 1500, now=0)
    err = caught.value
    assert err.retry_after is None
    assert "model 'm' (all callers together): 1000 tokens per minute" in err.message
    assert "could use up to 1500 tokens" in err.message and "never fit" in err.message
    h = shown(err.headers())
    assert h["x-should-retry"] == "false" and "retry-after" not in h


async def test_settle_gives_back_the_unused_worst_case() -> None:
    store = MemoryLimits()
    applied = limits.applicable(RateLimitsConfig(keys=RateLimit(tpm=1000)), key(), None,
                                None, "m")
    t = await limits.admit(store, applied, 800, now=0)
    assert shown(limits.headers(t))["x-ratelimit-remaining-tokens"] == "200"
    with pytest.raises(limits.LimitExceeded):
        await limits.admit(store, applied, 800, now=1)
    await limits.settle(store, t, 150)
    assert t.tokens == 150
    assert shown(limits.headers(t))["x-ratelimit-remaining-tokens"] == "850"
    t2 = await limits.admit(store, applied, 800, now=2)
    assert shown(limits.headers(t2))["x-ratelimit-remaining-tokens"] == "50"


async def test_no_limits_no_store_call_no_headers() -> None:
    class Untouchable(MemoryLimits):
        async def take(self, entry_id: str, claims: Sequence[Claim], window: float,
                       now: float) -> Reservation:
            raise AssertionError("no limit applies: the store is not asked")

        async def adjust(self, entry_id: str, amounts: Sequence[tuple[str, float]]) -> None:
            raise AssertionError("no limit applies: the store is not asked")

    t = await limits.admit(Untouchable(), [], 100, now=0)
    await limits.settle(Untouchable(), t, 5)
    assert limits.headers(t) == []


# A flood on a fake clock: the window is exact.

def admitted_per_minute(times: list[float], ends: list[float]) -> list[int]:
    """Admitted in (end - 60, end] for each end."""
    return [bisect.bisect_right(times, e) - bisect.bisect_right(times, e - 60) for e in ends]


def window_ends(arrivals: list[float], admitted: list[float]) -> list[float]:
    """Every minute that could hold the most or the least: ending at an arrival, or
    just before an admitted entry leaves."""
    return sorted(e for e in [*arrivals, *(a + 60 - 1e-6 for a in admitted)]
                  if 60 <= e <= 180)


async def test_a_flood_of_requests_is_held_to_the_limit_in_every_sliding_minute() -> None:
    store = MemoryLimits()
    applied = limits.applicable(RateLimitsConfig(ips=RateLimit(rpm=100)), None, None,
                                "10.0.0.1", "m")
    arrivals = [i * 0.06 for i in range(3000)]  # 1000 a minute for 3 minutes: 10x
    admitted: list[float] = []
    for now in arrivals:
        try:
            await limits.admit(store, applied, 0, now)
            admitted.append(now)
        except limits.LimitExceeded as e:
            assert e.retry_after is not None and 0 < e.retry_after <= 60
        assert store.size()[1] <= 100  # one window's entries, never the flood's
    counts = admitted_per_minute(admitted, window_ends(arrivals, admitted))
    assert max(counts) <= 100 and min(counts) >= 98
    assert 294 <= len(admitted) <= 300


async def test_a_flood_of_tokens_settled_to_actual_is_held_to_the_limit() -> None:
    # Each request counts its worst case (100) until it settles to what it used (40):
    # ~250 fit a minute, not the 100 the worst case alone would allow.
    store = MemoryLimits()
    applied = limits.applicable(RateLimitsConfig(users=RateLimit(tpm=10_000)), None,
                                "alice", None, "m")
    arrivals = [i * 0.024 for i in range(7500)]  # 100k tokens a minute: 10x
    admitted: list[float] = []
    for now in arrivals:
        try:
            t = await limits.admit(store, applied, 100, now)
        except limits.LimitExceeded:
            continue
        await limits.settle(store, t, 40)
        admitted.append(now)
    tokens = [n * 40 for n in admitted_per_minute(admitted, window_ends(arrivals, admitted))]
    assert max(tokens) <= 10_000 and min(tokens) >= 9_800


async def test_random_arrivals_and_sizes_never_pass_the_limit() -> None:
    # (With sizes that vary, a minute can fall short of the limit: when the first
    # minute's burst slides out, requests leave as fast as new ones arrive and a
    # refused one is room lost. It never goes over.)
    rng = random.Random(7)
    store = MemoryLimits()
    applied = limits.applicable(RateLimitsConfig(users=RateLimit(tpm=10_000)), None,
                                "alice", None, "m")
    used: list[tuple[float, int]] = []
    for now in sorted(rng.uniform(0, 180) for _ in range(10_000)):
        try:
            t = await limits.admit(store, applied, rng.randint(50, 300), now)
        except limits.LimitExceeded:
            continue
        actual = rng.randint(0, t.tokens)
        await limits.settle(store, t, actual)
        used.append((now, actual))
    times = [u[0] for u in used]
    prefix = [0]
    for _, n in used:
        prefix.append(prefix[-1] + n)
    for end in [*times, *(x + 60 - 1e-6 for x in times)]:
        lo, hi = bisect.bisect_right(times, end - 60), bisect.bisect_right(times, end)
        assert prefix[hi] - prefix[lo] <= 10_000


async def test_idle_counters_are_dropped() -> None:
    store = MemoryLimits(sweep_every=100)
    cfg = RateLimitsConfig(ips=RateLimit(rpm=100))

    def applied_for(ip: str) -> list[limits.Limit]:
        return limits.applicable(cfg, None, None, ip, "m")

    # A new client address every 60ms for 10 minutes: 1000 live in any minute.
    for i in range(10_000):
        await limits.admit(store, applied_for(f"10.0.{i // 256}.{i % 256}"), 0, i * 0.06)
        counters, entries = store.size()
        assert counters == entries <= 2 * 1000 + 100
    # Quiet for three minutes, then one client: the old counters go at the next sweep
    # (within `sweep_every` takes), and this one keeps only its last minute.
    for j in range(100):
        await limits.admit(store, applied_for("10.9.9.9"), 0, 800 + j)
    assert store.size() == (1, 60)
