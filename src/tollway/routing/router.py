"""Which deployment gets a call, and what happens when it fails.

For one request: the alias's pool first, then its fallbacks in order. Within a pool,
the lowest priority with a usable deployment takes the traffic, balanced by weight,
load and latency (`balance.choose`); a deployment whose circuit breaker is open is
not usable.

A retryable failure (`retry.retryable`: 429, 5xx, timeouts, connection failures) moves
the request at once to a deployment it has not tried — the pool's next, then each
fallback's — and only when every usable deployment on the chain has had its call is
one called again: the first whose backoff (or the upstream's Retry-After, if at most
`max_retry_after`) has passed, while the alias's retry budget allows. So a failing
primary never uses up the attempts a healthy fallback could have answered with.

Bounds: `max_attempts` upstream calls and `max_seconds` per request, except that each
pool on the chain always gets its first call (a fallback is never skipped for want of
attempts or time); no retry starts after `max_seconds`, and one in flight then is cut.
Each call is bounded by its deployment's own timeouts (the transport's). Client errors
go straight back; a context overflow moves to the next fallback with a larger window.
A stream is only ever retried before its first byte: `Provider.stream` returns once the
upstream sent its first event, and nothing after that comes back here. An embeddings
request is sent the same way (`Provider.embed`), retried and fallen back alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec

from tollway import tracing
from tollway.accounting.prices import Price
from tollway.accounting.settlement import Outcome, Release, Releases, Settlement
from tollway.config import BreakerConfig, PacingConfig, RetryConfig
from tollway.errors import TollwayError, Unavailable, UpstreamError, UpstreamTimeout
from tollway.providers.base import Provider
from tollway.routing import retry
from tollway.routing.balance import Load, choose
from tollway.routing.breaker import Breaker
from tollway.routing.pacing import Pacer, Pass
from tollway.routing.retry import RetryBudget
from tollway.types import Answer, ChatRequest, Deployment, EmbeddingRequest


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
    """What sending did, for the ledger and metrics: the router's own record of one
    request."""

    deployment: Deployment | None = None  # being called, or answered
    retries: int = 0  # upstream calls beyond the first
    retried: tuple[Deployment, ...] = ()  # where each of those went, in order
    fallback_from: str | None = None  # the first model tried, when another answered


class _Failed(msgspec.Struct):
    """A deployment this request called and that failed retryably: when it may be
    called again (None: not within this request), and how often it failed."""

    ready_at: float | None
    times: int


class _Send(msgspec.Struct):
    """One request's way through the chain. (A Struct: one is made per request.)"""

    req: ChatRequest | EmbeddingRequest
    attempts: Attempts
    tokens: int
    releases: Releases
    deadline: float
    calls: int = 0
    first: Deployment | None = None
    last: TollwayError | None = None
    overflow_from: int | None = None  # the context window an overflow happened at
    failed: dict[Deployment, _Failed] = {}  # chain order


class Router:
    def __init__(self, providers: dict[str, Provider],
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, earlier: Router | None = None) -> None:
        """`earlier`: the router of the configuration this one replaces (a reload)."""
        self.providers = providers
        self.clock = clock
        self.rng = rng or random.Random()
        self.upstreams: dict[Deployment, Upstream] = {}
        # A deployment the reloaded configuration keeps as it was (same route, same
        # settings) keeps its breaker, load, latency and pacing — and its identity,
        # which the providers' per-deployment caches key on.
        self._earlier: dict[tuple[object, ...], tuple[Deployment, Upstream]] = (
            {} if earlier is None else {key: (d, earlier.upstreams[d])
                                        for d, key in earlier._keys.items()
                                        if d in earlier.upstreams})
        self._keys: dict[Deployment, tuple[object, ...]] = {}

    def add(self, dep: Deployment, breaker: BreakerConfig, pacing: PacingConfig,
            price: Price | None, route: str = "") -> Deployment:
        """`dep`'s upstream state, made — or carried over with the deployment itself
        from the earlier configuration's, for the same route with the same settings;
        the deployment to use."""
        window = price.context_window if price is not None else None
        key = (route, *dataclasses.astuple(dep), msgspec.json.encode(breaker),
               msgspec.json.encode(pacing), window)
        carried = self._earlier.pop(key, None)
        if carried is not None:
            dep, up = carried
        else:
            up = Upstream(Breaker(breaker, self.clock), Load(), Pacer(pacing, self.clock), window)
        self.upstreams[dep] = up
        self._keys[dep] = key
        return dep

    def drop(self, dep: Deployment) -> None:
        """Let go of a deployment's state (a wildcard route evicted)."""
        self.upstreams.pop(dep, None)
        self._keys.pop(dep, None)

    def paced(self, chain: list[Pool]) -> bool:
        """Does any deployment on the chain pace its sends (so tokens must be counted)?"""
        return any(self.upstreams[d].pacer.active for p in chain for d in p.deployments)

    async def send(self, req: ChatRequest | EmbeddingRequest, chain: list[Pool],
                   attempts: Attempts, tokens: int, releases: Releases) -> Answer:
        """Call upstream until one answers; `tokens` is the request's estimated size
        (input + max output), for outbound pacing, whose pass is given back with the
        real tokens when the request is settled."""
        cfg = chain[0].retry
        chain[0].budget.deposit()
        attempts.fallback_from = None  # a resend (the schema asked again) starts afresh
        attempts.retried = ()
        s = _Send(req, attempts, tokens, releases, self.clock() + cfg.max_seconds)
        attempt = self._traced if tracing.ON else self._attempt  # each in a span of its own
        # First every usable deployment once, in chain order.
        for pool in chain:
            if s.overflow_from is not None and not self._larger(pool, s.overflow_from):
                continue
            tried: set[Deployment] = set()
            opened = s.calls  # this pool's first call is owed whatever the bounds
            while s.calls == opened or (s.calls < cfg.max_attempts
                                        and self.clock() < s.deadline):
                dep = self._pick(pool, tried)
                if dep is None:
                    break
                tried.add(dep)
                if not serves(s.req, dep):
                    self.upstreams[dep].breaker.cancel()  # allowed, never called
                    continue
                answer = await (attempt(s, pool, dep) if s.calls == opened
                                else self._attempt_until(s, pool, dep, attempt))
                if answer is not None:
                    return answer
                if s.last is not None and retry.context_overflow(s.last):
                    break  # too long for this pool: on to one with a larger window
        # Then again, each after its backoff, within the bounds and the retry budget.
        while s.calls < cfg.max_attempts:
            pick = await self._next_retry(s, chain)
            if pick is None:
                break
            pool, dep = pick
            if not chain[0].budget.take():
                self.upstreams[dep].breaker.cancel()
                break
            answer = await self._attempt_until(s, pool, dep, attempt)
            if answer is not None:
                return answer
        raise self._give_up(chain, s.last, s.calls)

    async def _attempt(self, s: _Send, pool: Pool, dep: Deployment) -> Answer | None:
        """One call to `dep` (its breaker already allowed it): the answer, or None
        after a retryable failure (recorded in `s`)."""
        up = self.upstreams[dep]
        try:
            paced = None
            if up.pacer.active:
                wait = up.pacer.acquire(s.tokens)
                paced = await (tracing.traced("tollway.pacing", wait, {"tollway.tokens": s.tokens})
                               if tracing.ON else wait)
        except TollwayError as e:  # back-pressure: this one is full, try another
            up.breaker.cancel()
            self._failed(s, pool, dep, e)
            return None
        except BaseException:  # cancelled while waiting: the call was never made
            up.breaker.cancel()
            raise
        s.calls += 1
        if s.calls > 1:
            s.attempts.retried += (dep,)
        s.attempts.retries, s.attempts.deployment = s.calls - 1, dep
        s.first = s.first or dep
        provider = self.providers[dep.provider]
        up.load.start()
        t0 = time.perf_counter()
        try:
            req = s.req
            # A type check, not isinstance: that costs every chat call ~150 instructions
            # more (and mypy narrows only this branch: the others are ChatRequest).
            if type(req) is EmbeddingRequest:
                reply = await provider.embed(req, dep)
                answer = Answer(dep, reply=reply)
                headers = reply.ratelimit
            elif req.stream:  # type: ignore[union-attr]
                stream = await provider.stream(req, dep)  # type: ignore[arg-type]
                answer = Answer(dep, stream=stream)
                headers = stream.ratelimit
            else:
                reply = await provider.complete(req, dep)  # type: ignore[arg-type]
                answer = Answer(dep, reply=reply)
                headers = reply.ratelimit
        except TollwayError as e:
            up.load.done(None)
            up.breaker.record(not retry.counts_against_deployment(e))
            if e.upstream_headers:  # a 429 says how long the provider needs
                up.pacer.learn(e.upstream_headers)
            if retry.context_overflow(e) and up.window is not None:
                s.overflow_from, s.last = up.window, e
                return None
            if not retry.retryable(e):
                raise
            self._failed(s, pool, dep, e)
            return None
        except BaseException:  # cancelled (the client left): not the deployment's fault
            up.load.done(None)
            up.breaker.cancel()
            raise
        up.load.done(time.perf_counter() - t0)
        up.breaker.record(True)
        if headers:
            up.pacer.learn(headers)
        if paced is not None:
            s.releases.push("pacing pass", _settle_pace(up.pacer, paced))
        if dep is not s.first and s.first is not None and s.first.model != dep.model:
            s.attempts.fallback_from = s.first.model
        return answer

    async def _traced(self, s: _Send, pool: Pool, dep: Deployment) -> Answer | None:
        """`_attempt` in a span of its own (tracing on): where it went, why — the
        first call, the pool's next deployment, a fallback, or a retry of one that
        failed before — after which failure, and what came of it."""
        reason = ("first" if s.first is None else "retry" if dep in s.failed
                  else "next_deployment" if s.first in pool.deployments else "fallback")
        before = s.last
        with tracing.attempt(dep, pool.alias, s.calls + 1, reason, before,
                             type(s.req) is EmbeddingRequest) as span:
            try:
                answer = await self._attempt(s, pool, dep)
            except BaseException as e:
                tracing.failed(span, e)
                raise
            tracing.attempted(span, answer, s.last if s.last is not before else None)
            return answer

    async def _attempt_until(self, s: _Send, pool: Pool, dep: Deployment,
                             attempt: Callable[[_Send, Pool, Deployment],
                                               Awaitable[Answer | None]]) -> Answer | None:
        """An attempt cut at the request's deadline (its pacing wait too)."""
        try:
            async with asyncio.timeout(max(0.0, s.deadline - self.clock())):
                return await attempt(s, pool, dep)
        except TimeoutError:
            self._failed(s, pool, dep, UpstreamTimeout(
                f"Upstream {dep.provider}/{dep.model} did not answer within the request's "
                f"{pool.retry.max_seconds:g}s (retry.max_seconds)."))
            return None

    def _failed(self, s: _Send, pool: Pool, dep: Deployment, e: TollwayError) -> None:
        """Note a retryable failure, and when `dep` may be called again."""
        s.last = e
        before = s.failed.get(dep)
        times = before.times + 1 if before is not None else 1
        wait = self._retry_wait(pool, e, times)
        s.failed[dep] = _Failed(None if wait is None else self.clock() + wait, times)

    async def _next_retry(self, s: _Send, chain: list[Pool]
                          ) -> tuple[Pool, Deployment] | None:
        """The deployment to call again: the first on the chain whose wait is over and
        whose breaker lets a call through; waits for the earliest if none is ready yet.
        None once nothing can be retried within the deadline."""
        pools = {d: p for p in chain for d in p.deployments
                 if s.overflow_from is None or self._larger(p, s.overflow_from)}
        while True:
            now = self.clock()
            waiting = [(f.ready_at, d) for d, f in s.failed.items()
                       if f.ready_at is not None and d in pools]
            if not waiting or now >= s.deadline:
                return None
            for ready_at, dep in waiting:
                if ready_at <= now:
                    if self.upstreams[dep].breaker.allow():
                        return pools[dep], dep
                    s.failed[dep].ready_at = None  # open: not usable this request
            wake = min((r for r, d in waiting if s.failed[d].ready_at is not None),
                       default=None)
            if wake is None or wake >= s.deadline:
                return None
            if wake > now:
                await asyncio.sleep(wake - now)  # a backoff, not a test wait

    def broke(self, answer: Answer, e: TollwayError) -> None:
        """A stream failed after it began (the upstream dropped it, went silent, sent
        an error): a failure of its deployment, which its breaker counts, though the
        call itself was recorded as answered."""
        up = self.upstreams.get(answer.deployment)
        if (up is not None and answer.stream is not None
                and isinstance(e, UpstreamError | UpstreamTimeout)
                and retry.counts_against_deployment(e)):
            up.breaker.record(False)

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

    def _retry_wait(self, pool: Pool, e: TollwayError, n: int) -> float | None:
        """How long to wait before calling a deployment again after its `n`th failure;
        None: do not (the upstream asked for longer than we wait: move on)."""
        ra = e.retry_after
        if ra is not None and ra > pool.retry.max_retry_after:
            return None
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


def serves(req: ChatRequest | EmbeddingRequest, dep: Deployment) -> bool:
    """Can `dep` take `req`? Not a Responses request with a hosted tool (or its items),
    unless it speaks the Responses API natively: such a request skips the others."""
    if type(req) is not ChatRequest:
        return True
    native = req.native
    return native is None or native.only is None or dep.responses_native


def _settle_pace(pacer: Pacer, ticket: Pass) -> Release:
    """Give the pacing pass back with the tokens used (unknown: the estimate stands)."""

    async def settle(_: Outcome, s: Settlement) -> None:
        pacer.settle(ticket, s.tokens if s.usage is not None else None)

    return settle
