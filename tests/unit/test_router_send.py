"""Sending (`Router.send`) to fake providers: who answered and how (`Attempts`),
retryable failures moving on, client errors going straight back, and the pacing pass
given back with the real tokens."""

from __future__ import annotations

import random

import pytest

from tests.unit.fakes import FakeProvider, request, text_of, usage
from tollway.accounting.settlement import Aborted, Releases, Settlement
from tollway.config import BreakerConfig, PacingConfig, RetryConfig
from tollway.errors import InvalidRequest, TollwayError, UpstreamError
from tollway.providers.base import error_from_status
from tollway.routing.router import Attempts, Pool, Router
from tollway.types import Answer, Deployment, Usage

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
