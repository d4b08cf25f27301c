"""Which deployment gets a call, and what happens when it fails.

For one request: the alias's pool first, then its fallbacks in order. Within a pool,
the lowest priority with a usable deployment takes the traffic, balanced by weight,
load and latency (`balance.choose`); a deployment whose circuit breaker is open is
not usable. On a retryable failure (`retry.retryable`) the request moves at once to
a deployment it has not tried; when the pool has none left, it retries the pool
after a backoff (or the upstream's Retry-After) if the alias's retry budget allows,
else it moves to the next fallback. Client errors go straight back; a context
overflow moves to the next fallback with a larger window. Every call is bounded by
`retry.max_attempts` and `retry.max_seconds`. A stream is only ever retried before
its first byte: `Provider.stream` returns once the upstream sent its first event,
and nothing after that comes back here.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from tollway.accounting.prices import Price
from tollway.accounting.settlement import Outcome, Release, Releases, Settlement
from tollway.config import BreakerConfig, PacingConfig, RetryConfig
from tollway.errors import TollwayError, Unavailable
from tollway.providers.base import Provider
from tollway.routing import retry
from tollway.routing.balance import Load, choose
from tollway.routing.breaker import Breaker
from tollway.routing.pacing import Pacer, Pass
from tollway.routing.retry import RetryBudget
from tollway.types import Answer, ChatRequest, Deployment


@dataclass(slots=True)
class Pool:
    """An alias's deployments and how to retry them."""

    alias: str
    deployments: list[Deployment]
    retry: RetryConfig
    budget: RetryBudget = field(init=False)

    def __post_init__(self) -> None:
        self.budget = RetryBudget(self.retry)


@dataclass(slots=True)
class Upstream:
    """The live state of one deployment."""

    breaker: Breaker
    load: Load
    pacer: Pacer
    window: int | None  # context window, when known (price table)


class Attempts(msgspec.Struct):
    """What sending did, for the ledger: the router's own record of one request."""

    deployment: Deployment | None = None  # being called, or answered
    retries: int = 0  # upstream calls beyond the first
    fallback_from: str | None = None  # the first model tried, when another answered


class Router:
    def __init__(self, providers: dict[str, Provider],
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.providers = providers
        self.clock = clock
        self.rng = rng or random.Random()
        self.upstreams: dict[Deployment, Upstream] = {}

    def add(self, dep: Deployment, breaker: BreakerConfig, pacing: PacingConfig,
            price: Price | None) -> None:
        self.upstreams[dep] = Upstream(Breaker(breaker, self.clock), Load(),
                                       Pacer(pacing, self.clock),
                                       price.context_window if price is not None else None)

    def paced(self, chain: list[Pool]) -> bool:
        """Does any deployment on the chain pace its sends (so tokens must be counted)?"""
        return any(self.upstreams[d].pacer.active for p in chain for d in p.deployments)

    async def send(self, req: ChatRequest, chain: list[Pool], attempts: Attempts,
                   tokens: int, releases: Releases) -> Answer:
        """Call upstream until one answers; `tokens` is the request's estimated size
        (input + max output), for outbound pacing, whose pass is given back with the
        real tokens when the request is settled."""
        cfg = chain[0].retry
        chain[0].budget.deposit()
        deadline = self.clock() + cfg.max_seconds
        calls = 0
        attempts.fallback_from = None  # a resend (the schema asked again) starts afresh
        first: Deployment | None = None
        last: TollwayError | None = None
        overflow_from: int | None = None  # the window a context overflow happened at
        for pool in chain:
            if overflow_from is not None and not self._larger(pool, overflow_from):
                continue
            tried: set[Deployment] = set()
            rounds = 0
            while calls < cfg.max_attempts and self.clock() < deadline:
                dep = self._pick(pool, tried)
                if dep is None:
                    # Everything here was tried (or is open): again after a backoff, if
                    # the budget allows and the wait fits; else the next fallback.
                    wait = self._retry_wait(pool, last, rounds + 1)
                    if (wait is None or not tried or self.clock() + wait >= deadline
                            or not pool.budget.take()):
                        break
                    rounds += 1
                    await asyncio.sleep(wait)  # a backoff, not a test wait
                    tried.clear()
                    continue
                tried.add(dep)
                up = self.upstreams[dep]
                try:
                    paced = await self._pace(up, tokens)
                except TollwayError as e:  # back-pressure: this one is full, try another
                    up.breaker.cancel()
                    last = e
                    continue
                calls += 1
                attempts.retries, attempts.deployment = calls - 1, dep
                first = first or dep
                try:
                    answer = await self._call(req, dep, up)
                except TollwayError as e:
                    if e.upstream_headers:  # a 429 says how long the provider needs
                        up.pacer.learn(e.upstream_headers)
                    if retry.context_overflow(e) and up.window is not None:
                        overflow_from, last = up.window, e
                        break
                    if not retry.retryable(e):
                        raise
                    last = e
                    continue
                if paced is not None:
                    releases.push("pacing pass", _settle_pace(up.pacer, paced))
                if dep is not first and first is not None and first.model != dep.model:
                    attempts.fallback_from = first.model
                return answer
        raise self._give_up(chain, last, calls)

    def _pick(self, pool: Pool, tried: set[Deployment]) -> Deployment | None:
        if len(pool.deployments) == 1:  # nothing to balance: its breaker alone decides
            only = pool.deployments[0]
            return only if only not in tried and self.upstreams[only].breaker.allow() else None
        candidates = [d for d in pool.deployments
                      if d not in tried and self.upstreams[d].breaker.state != "open"]
        while candidates:
            loads = {d: self.upstreams[d].load for d in candidates}
            dep = choose(candidates, loads, self.rng)
            if dep is None:
                return None
            if self.upstreams[dep].breaker.allow():  # half-open: limited probes
                return dep
            candidates.remove(dep)
        return None

    async def _pace(self, up: Upstream, tokens: int) -> Pass | None:
        if not up.pacer.active:
            return None
        return await up.pacer.acquire(tokens)

    async def _call(self, req: ChatRequest, dep: Deployment, up: Upstream) -> Answer:
        provider = self.providers[dep.provider]
        up.load.start()
        t0 = time.perf_counter()
        try:
            if req.stream:
                stream = await provider.stream(req, dep)
                answer = Answer(dep, stream=stream)
                headers = stream.ratelimit
            else:
                reply = await provider.complete(req, dep)
                answer = Answer(dep, reply=reply)
                headers = reply.ratelimit
        except TollwayError as e:
            up.load.done(None)
            up.breaker.record(not retry.counts_against_deployment(e))
            raise
        except BaseException:  # cancelled (the client left): not the deployment's fault
            up.load.done(None)
            up.breaker.cancel()
            raise
        up.load.done(time.perf_counter() - t0)
        up.breaker.record(True)
        if headers:
            up.pacer.learn(headers)
        return answer

    def _retry_wait(self, pool: Pool, last: TollwayError | None, n: int) -> float | None:
        """How long to wait before trying the pool again; None: do not."""
        if last is None or not retry.retryable(last):
            return None
        ra = last.retry_after
        if ra is not None and ra > pool.retry.max_retry_after:
            return None  # the upstream asked for longer than we wait: move on
        return retry.backoff(n, pool.retry, self.rng, ra)

    def _larger(self, pool: Pool, window: int) -> bool:
        return any((self.upstreams[d].window or 0) > window for d in pool.deployments)

    def _give_up(self, chain: list[Pool], last: TollwayError | None,
                 calls: int) -> TollwayError:
        """Nothing answered. The last upstream error goes back as it is (a 429 stays a
        429 with its Retry-After, a timeout a 504), saying how many calls were made;
        when nothing could even be called, 503 with the time until a breaker lets
        calls through again."""
        if last is None:
            deps = [d for p in chain for d in p.deployments]
            wait = min(self.upstreams[d].breaker.retry_in() for d in deps)
            return Unavailable(f"Every upstream for '{chain[0].alias}' is failing and "
                               "paused (circuit breakers open); try again shortly.",
                               retry_after=max(wait, 1.0), code="circuit_open")
        if calls > 1:
            last.message = f"{last.message} (after {calls} attempts)"
            last.args = (last.message,)
        return last


def _settle_pace(pacer: Pacer, ticket: Pass) -> Release:
    """Give the pacing pass back with the tokens used (unknown: the estimate stands)."""

    async def settle(_: Outcome, s: Settlement) -> None:
        pacer.settle(ticket, s.tokens if s.usage is not None else None)

    return settle
