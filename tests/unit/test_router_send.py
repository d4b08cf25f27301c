"""Sending (`Router.send`) to fake providers: who answered and how (`Attempts`),
retryable failures moving on — to every untried pool before any deployment is called
again —, the bounds (max_attempts, max_seconds) and what they never cut, client errors
going straight back, and the pacing pass given back with the real tokens."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from tests.unit.fakes import FakeProvider, request, text_of, usage
from tollway.accounting.settlement import Aborted, Releases, Settlement
from tollway.config import BreakerConfig, PacingConfig, RetryConfig
from tollway.errors import InvalidRequest, TollwayError, UpstreamError, UpstreamTimeout
from tollway.providers.base import error_from_status
from tollway.routing.breaker import Breaker
from tollway.routing.router import Attempts, Pool, Router
from tollway.types import Answer, ChatRequest, Deployment, Reply, Usage

# No second round on a pool that failed: the request moves on to the next at once.
NO_ROUNDS = RetryConfig(budget=0.0, budget_floor=0.0)


def dep(model: str, priority: int = 0, base: str | None = None) -> Deployment:
    return Deployment(provider="fake", model=model, priority=priority, api_base=base)


def failure(status: int, d: Deployment, retry_after_ms: int | None = None) -> TollwayError:
    headers = {"retry-after-ms": str(retry_after_ms)} if retry_after_ms is not None else {}
    return error_from_status(status, b'{"error": {"message": "no"}}', headers, d)


def router(provider: FakeProvider, *deps: Deployment, pacing: PacingConfig | None = None
           ) -> Router:
    r = Router({"fake": provider}, rng=random.Random(7))
    for d in deps:
        r.add(d, BreakerConfig(), pacing or PacingConfig(), None)
    return r


async def send(r: Router, *pools: Pool, stream: bool = False, tokens: int = 100
               ) -> tuple[Answer, Attempts, Releases]:
    attempts, releases = Attempts(), Releases()
    got = await r.send(request("hi", stream=stream), list(pools), attempts, tokens, releases)
    return got, attempts, releases


async def test_the_answer_and_who_gave_it() -> None:
    d = dep("m-1")
    provider = FakeProvider()
    got, attempts, releases = await send(router(provider, d), Pool("a", [d], RetryConfig()))
    assert got.deployment is d and got.reply is not None and got.reply.model == "m-1"
    assert (attempts.deployment, attempts.retries, attempts.fallback_from) == (d, 0, None)
    assert provider.calls == [d] and releases.pending == []  # nothing paced, nothing taken


async def test_a_stream_is_answered_as_a_stream() -> None:
    d = dep("m-1")
    got, _, _ = await send(router(FakeProvider(), d), Pool("a", [d], RetryConfig()),
                           stream=True)
    assert got.stream is not None and await text_of(got.stream) == "from m-1"


async def test_a_retryable_failure_moves_to_the_next_deployment() -> None:
    first, second = dep("m", 0, "http://one"), dep("m", 1, "http://two")
    provider = FakeProvider(fail={first: failure(503, first)})
    got, attempts, _ = await send(router(provider, first, second),
                                  Pool("a", [first, second], NO_ROUNDS))
    assert provider.calls == [first, second] and got.deployment is second
    assert (attempts.deployment, attempts.retries) == (second, 1)
    assert attempts.fallback_from is None  # the same model answered


async def test_a_fallback_pools_model_answering_is_recorded() -> None:
    a, b = dep("model-a"), dep("model-b")
    provider = FakeProvider(fail={"model-a": failure(429, a)})
    got, attempts, _ = await send(router(provider, a, b), Pool("a", [a], NO_ROUNDS),
                                  Pool("b", [b], NO_ROUNDS))
    assert got.deployment is b and provider.calls == [a, b]
    assert (attempts.deployment, attempts.retries, attempts.fallback_from) == (b, 1, "model-a")


async def test_a_pool_is_tried_again_after_a_short_retry_after() -> None:
    d = dep("m-1")
    provider = FakeProvider(fail={d: failure(429, d, retry_after_ms=1)}, once=True)
    pool = Pool("a", [d], RetryConfig())
    got, attempts, _ = await send(router(provider, d), pool)
    assert got.deployment is d and provider.calls == [d, d]
    assert (attempts.retries, attempts.fallback_from) == (1, None)
    assert pool.budget.tokens == pytest.approx(3.0 + 0.2 - 1)  # the floor, a deposit, a retry


async def test_a_retry_after_longer_than_it_waits_moves_on_at_once() -> None:
    a, b = dep("model-a"), dep("model-b")
    provider = FakeProvider(fail={a: failure(429, a, retry_after_ms=30_000)})
    got, attempts, _ = await send(router(provider, a, b), Pool("a", [a], RetryConfig()),
                                  Pool("b", [b], RetryConfig()))
    assert got.deployment is b and provider.calls == [a, b]
    assert attempts.fallback_from == "model-a"


async def test_a_client_error_goes_straight_back() -> None:
    first, second = dep("m", 0, "http://one"), dep("m", 1, "http://two")
    provider = FakeProvider(fail={first: failure(400, first)})
    with pytest.raises(InvalidRequest) as got:
        await send(router(provider, first, second), Pool("a", [first, second], NO_ROUNDS))
    assert got.value.status == 400 and provider.calls == [first]


async def test_when_nothing_answers_the_last_error_says_how_many_calls() -> None:
    a, b = dep("model-a"), dep("model-b")
    provider = FakeProvider(fail={"model-a": failure(502, a), "model-b": failure(503, b)})
    with pytest.raises(UpstreamError) as got:
        await send(router(provider, a, b), Pool("a", [a], NO_ROUNDS), Pool("b", [b], NO_ROUNDS))
    assert "fake/model-b failed with 503" in got.value.message
    assert got.value.message.endswith("(after 2 attempts)")


@pytest.mark.parametrize(("used", "left"), [(usage(100, 20), 120), (None, 500)],
                         ids=["real_tokens", "no_usage_keeps_the_estimate"])
async def test_a_pacing_pass_is_given_back_with_the_real_tokens(
        used: Usage | None, left: int) -> None:
    d = dep("m-1")
    r = router(FakeProvider(), d, pacing=PacingConfig(tpm=10_000))
    _, _, releases = await send(r, Pool("a", [d], RetryConfig()), tokens=500)
    pacer = r.upstreams[d].pacer
    assert [what for what, _ in releases.pending] == ["pacing pass"]
    assert pacer.snapshot().tokens_in_window == 500  # the estimate, until settled
    await releases.unwind(Aborted(), Settlement(used, 0.0), "req")
    assert pacer.snapshot().tokens_in_window == left


async def test_a_later_send_for_the_same_request_leaves_no_stale_fallback() -> None:
    a, b = dep("model-a"), dep("model-b")
    provider = FakeProvider(fail={"model-a": failure(429, a)})
    r, attempts = router(provider, a, b), Attempts()
    chain = [Pool("a", [a], NO_ROUNDS), Pool("b", [b], NO_ROUNDS)]
    await r.send(request("hi"), chain, attempts, 100, Releases())  # b answers
    provider.fail.clear()
    await r.send(request("hi"), chain, attempts, 100, Releases())  # the schema's resend: a
    assert attempts.deployment is a
    assert attempts.fallback_from is None  # it says "model-a" fell back to model-a


# -- issue 17, item 1: attempts go where they can succeed ---------------------------


class Clock:
    """Fake monotonic time that the provider moves on as calls take time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class SlowProvider(FakeProvider):
    """A FakeProvider whose every call takes `seconds` of the fake clock; a deployment
    in `hang` never answers (until cancelled) once it has no failure left to raise."""

    clock: Clock = field(default_factory=Clock)
    seconds: float = 0.0
    hang: set[Deployment] = field(default_factory=set)

    async def complete(self, req: ChatRequest, dep: Deployment) -> Reply:
        self.clock.now += self.seconds
        if dep in self.hang and dep not in self.fail:
            self.calls.append(dep)
            await asyncio.Event().wait()
        return await super().complete(req, dep)


def timed_router(provider: SlowProvider, *deps: Deployment) -> Router:
    r = Router({"fake": provider}, clock=provider.clock, rng=random.Random(7))
    for d in deps:
        r.add(d, BreakerConfig(), PacingConfig(), None)
    return r


async def test_a_failing_primary_moves_to_its_fallback_before_being_retried() -> None:
    """The issue's case: `a` (fallbacks: [b]), max_attempts 3, A answering 500 to
    everything. Before, A took all three attempts and the request failed."""
    a, b = dep("model-a"), dep("model-b")
    provider = FakeProvider(fail={"model-a": failure(500, a)})
    got, attempts, _ = await send(router(provider, a, b), Pool("a", [a], RetryConfig()),
                                  Pool("b", [b], RetryConfig()))
    assert got.deployment is b and provider.calls == [a, b]
    assert (attempts.retries, attempts.retried, attempts.fallback_from) == (1, (b,), "model-a")


async def test_every_pool_gets_its_call_before_any_deployment_gets_a_second() -> None:
    a1, a2, b, c = (dep("model-a", 0, "http://a1"), dep("model-a", 1, "http://a2"),
                    dep("model-b"), dep("model-c"))
    provider = FakeProvider(fail={"model-a": failure(503, a1), "model-b": failure(429, b)})
    cfg = RetryConfig(max_attempts=4, base_delay=0.001, max_delay=0.001)
    got, attempts, _ = await send(router(provider, a1, a2, b, c), Pool("a", [a1, a2], cfg),
                                  Pool("b", [b], cfg), Pool("c", [c], cfg))
    assert provider.calls == [a1, a2, b, c] and got.deployment is c
    assert attempts.retried == (a2, b, c)


async def test_an_untried_fallback_gets_its_call_past_max_attempts() -> None:
    a, b, c = dep("model-a"), dep("model-b"), dep("model-c")
    provider = FakeProvider(fail={"model-a": failure(500, a), "model-b": failure(502, b)})
    one = RetryConfig(max_attempts=1)
    got, attempts, _ = await send(router(provider, a, b, c), Pool("a", [a], one),
                                  Pool("b", [b], one), Pool("c", [c], one))
    assert provider.calls == [a, b, c] and got.deployment is c
    assert attempts.retries == 2


async def test_an_untried_fallback_gets_its_call_past_max_seconds() -> None:
    a, b = dep("model-a"), dep("model-b")
    provider = SlowProvider(fail={"model-a": failure(504, a)}, seconds=40.0)
    cfg = RetryConfig(max_seconds=30.0)  # A's failure alone takes longer
    chain = [Pool("a", [a], cfg), Pool("b", [b], cfg)]
    attempts = Attempts()
    got = await timed_router(provider, a, b).send(request("hi"), chain, attempts, 100,
                                                  Releases())
    assert provider.calls == [a, b] and got.deployment is b


async def test_but_a_pools_other_deployments_wait_for_the_bounds() -> None:
    a1, a2, b = dep("model-a", 0, "http://a1"), dep("model-a", 1, "http://a2"), dep("model-b")
    provider = FakeProvider(fail={"model-a": failure(500, a1), "model-b": failure(500, b)})
    one = RetryConfig(max_attempts=1)
    with pytest.raises(UpstreamError) as got:
        await send(router(provider, a1, a2, b), Pool("a", [a1, a2], one), Pool("b", [b], one))
    assert provider.calls == [a1, b]  # a2 is not a fallback: max_attempts holds for it
    assert got.value.message.endswith("(after 2 attempts)")


async def test_when_every_pool_failed_the_first_ready_is_retried_within_the_budget() -> None:
    a, b = dep("model-a"), dep("model-b")
    # A may be called again after at most 1 ms, B only after its Retry-After of 50 ms.
    provider = FakeProvider(fail={"model-a": failure(500, a),
                                  "model-b": failure(429, b, retry_after_ms=50)}, once=True)
    cfg = RetryConfig(base_delay=0.001, max_delay=0.001)
    pool_a = Pool("a", [a], cfg)
    got, attempts, _ = await send(router(provider, a, b), pool_a, Pool("b", [b], cfg))
    assert provider.calls == [a, b, a] and got.deployment is a
    assert attempts.retried == (b, a) and attempts.fallback_from is None
    assert pool_a.budget.tokens == pytest.approx(3.0 + 0.2 - 1)  # one retry, one token


async def test_no_retry_without_budget_after_every_pool_failed() -> None:
    a, b = dep("model-a"), dep("model-b")
    provider = FakeProvider(fail={"model-a": failure(500, a), "model-b": failure(500, b)},
                            once=True)
    with pytest.raises(UpstreamError):
        await send(router(provider, a, b), Pool("a", [a], NO_ROUNDS), Pool("b", [b], NO_ROUNDS))
    assert provider.calls == [a, b]


async def test_a_retry_still_running_at_max_seconds_is_cut() -> None:
    d = dep("m-1")
    provider = SlowProvider(fail={d: failure(500, d)}, once=True)
    cfg = RetryConfig(max_seconds=0.2, base_delay=0.001, max_delay=0.001)
    r = Router({"fake": provider}, rng=random.Random(7))  # real time: asyncio cuts it
    r.add(d, BreakerConfig(), PacingConfig(), None)
    provider.hang.add(d)  # the first call fails (it is in `fail`), the retry hangs
    with pytest.raises(UpstreamTimeout) as got:
        await r.send(request("hi"), [Pool("a", [d], cfg)], Attempts(), 100, Releases())
    assert provider.calls == [d, d] and got.value.status == 504
    assert "within the request's 0.2s (retry.max_seconds)" in got.value.message
    assert r.upstreams[d].load.in_flight == 0  # the cut call was ended, not leaked


async def test_a_stream_that_broke_after_it_began_counts_against_its_breaker() -> None:
    d = dep("m-1")
    r = router(FakeProvider(), d)
    r.upstreams[d].breaker = Breaker(BreakerConfig(min_requests=2, failure_rate=0.5))
    answer, _, _ = await send(r, Pool("a", [d], RetryConfig()), stream=True)
    r.broke(answer, UpstreamError("Upstream fake/m-1 dropped the connection."))
    assert r.upstreams[d].breaker.state == "open"  # 1 answered + 1 broke: 50 % failed
