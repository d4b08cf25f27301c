"""The request path. Every chat request, from HTTP or from Python, goes through the
gateway, top to bottom:

    authenticate -> pick the tier -> resolve the alias (is the key allowed it?) ->
    input limits -> a stored conversation's history put in front of the new turns ->
    input guards (prompt injection, PII) -> the history policy (window, summarise)
    -> cap the output -> look in the
    cache (a hit is answered here, at no cost) -> find the budgets that apply ->
    count the input (when a limit or budget needs it) -> maybe downgrade (short
    input; budget nearly spent) ->
    pre-flight cost checks (input length, worst case vs the ceiling, unpriced
    models) -> reserve the worst case on every budget -> route to a deployment (in
    order, moving on only on failures another deployment could fix) -> output guards
    (the JSON schema asked for, retried; PII placeholders put back) -> meter the
    stream -> store a conversation's new turns with the reply (before the caller has
    all of it, so its next turn sees them)

and, once the answer is complete (or failed, or the client left), `finish` settles
the hold to the real cost exactly once, records the ledger row, the metrics and the
log line, and caches a complete answer. Each step is one call into a module with a
small interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tollway.accounting import prices, tokens
from tollway.accounting.ledger import Ledger, LedgerRow
from tollway.accounting.meter import StreamMeter, output_tokens_of
from tollway.accounting.tokens import count_request_async
from tollway.cache.controls import for_alias
from tollway.cache.entry import CachedAnswer, body_of_stream, replay_reply, replay_stream
from tollway.cache.response import Lookup, ResponseCache
from tollway.config import Config, ModelConfig
from tollway.conversation import history, summary, thread
from tollway.errors import (
    BudgetExceeded,
    InvalidOutput,
    InvalidRequest,
    ModelNotFound,
    TollwayError,
    Unavailable,
)
from tollway.guards import output
from tollway.guards import policy as guard_policy
from tollway.guards import schema as schema_check
from tollway.guards.validate import check as check_limits
from tollway.observe import Observer
from tollway.policy import auth, budget, cost
from tollway.policy import limits as rate_limits
from tollway.policy.alerts import Alerts
from tollway.providers.base import Provider, redact
from tollway.providers.http import split_events
from tollway.providers.registry import build_providers
from tollway.routing import tiers
from tollway.routing.pacing import Pacer
from tollway.routing.router import Pool, Router
from tollway.store import open_store
from tollway.store.base import Store
from tollway.store.embedded import MemoryLimits
from tollway.types import (
    CallContext,
    ChatRequest,
    Deployment,
    FrameStream,
    Reply,
    ReplyStream,
    Usage,
)

log = logging.getLogger("tollway")
PRUNE_SECONDS = 3600.0  # how often idle conversations are looked for (with a retention)


@dataclass(slots=True)
class Answer:
    """What the caller gets: a full reply or a stream, who answered, and what the
    gateway knew before sending (input tokens counted, worst case)."""

    deployment: Deployment
    reply: Reply | None = None
    stream: ReplyStream | None = None
    input_tokens: int | None = None  # our count, when a limit needed it
    worst_case_usd: float | None = None
    meter: StreamMeter | None = None
    paced: tuple[Pacer, Any] | None = None  # an outbound pacing pass, settled at finish
    cache: Lookup | None = None  # what the cache found (a hit), or will remember (a miss)
    # A finished stream as one chat.completion: assembled once, for whoever needs it
    # (the schema check, the output PII log, the cache).
    assembled: dict[str, Any] | None = None

    @property
    def model(self) -> str:
        return self.deployment.model


@dataclass(slots=True)
class Settlement:
    """The priced outcome of a finished answer."""

    usage: Usage | None
    cost_usd: float | None  # None: the model has no price
    estimated: bool  # usage is our count (stream cut, or the provider reported none)
    cut: bool = False
    saved_usd: float = 0.0  # a cache hit: what the original call cost


@dataclass(frozen=True, slots=True)
class HistoryOutcome:
    """What the history policy sent (reply headers, ledger)."""

    policy: str
    tokens: int  # history sent: every message before the latest turn
    saved_tokens: int  # kept back by trimming or summarising


@dataclass(slots=True)
class Hold:
    """A reservation on budgets, settled once in `Gateway.finish`."""

    id: str
    applied: list[budget.Applied]


@dataclass(slots=True)
class _Route:
    alias: str
    model: ModelConfig
    deployments: list[Deployment]
    limits: cost.Limits
    pool: Pool
    chain: list[Pool] = field(default_factory=list)  # this pool, then its fallbacks'


class Gateway:
    def __init__(self, config: Config, providers: dict[str, Provider] | None = None,
                 store: Store | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.providers = providers if providers is not None else build_providers(config)
        self.store = store if store is not None else open_store(config)
        self.ledger = Ledger(self.store.ledger, config.ledger, config.store.path)
        self.observer = Observer()
        self.alerts = Alerts(config.alerts, self.store)
        self._local_limits = MemoryLimits()  # rate limits while the shared store is down
        self._cache_client: Any = None  # a Redis client of the cache's own, when configured
        self.cache = self._open_cache(config, clock)
        self._warming: asyncio.Task[None] | None = None
        self._cache_start: asyncio.Task[None] | None = None
        self._pruning: asyncio.Task[None] | None = None
        b = config.budgets
        self._budgets = bool(b.global_ or b.teams or b.users or b.features or b.conversations)
        self._secrets = {d.api_key for mc in config.models.values() for d in mc.deployments
                         if d.api_key}
        table = prices.load_table(config.prices)
        self._routes: dict[str, _Route] = {}
        self._guards = {alias: guard_policy.resolve(config.guards, mc.guards)
                        for alias, mc in config.models.items()}
        self._history = {alias: history.resolve(config.history, mc.history, None)
                         for alias, mc in config.models.items()}
        # Per deployment (identity-hashed), looked up on every request.
        self._prices: dict[Deployment, prices.Price | None] = {}
        self.router = Router(self.providers)
        routing = config.routing
        for alias, mc in config.models.items():
            deps = [d.to_deployment() for d in mc.deployments]
            pool = Pool(alias, deps, mc.retry or routing.retry)
            self._routes[alias] = _Route(alias, mc, deps, cost.Limits.of(mc, config.server), pool)
            for cfg, dep in zip(mc.deployments, deps, strict=True):
                price = (prices.price_from_config(cfg.price) if cfg.price
                         else table.get(dep.model))
                self._prices[dep] = price
                self.router.add(dep, mc.breaker or routing.breaker, cfg.pacing, price)
        for route in self._routes.values():
            route.chain = [route.pool, *(self._resolve(f).pool for f in route.model.fallbacks)]

    def deployments(self) -> dict[str, list[Deployment]]:
        return {alias: r.deployments for alias, r in self._routes.items()}

    def scrub(self, err: TollwayError) -> TollwayError:
        """Provider keys never leave the server: cut them (and anything key-shaped)
        from an error's message before a caller or a log sees it."""
        err.message = redact(err.message, *self._secrets)
        err.args = (err.message,)
        return err

    async def start(self) -> None:
        await self.store.open()
        self.ledger.start()
        self.observer.start()
        # Off the event loop: the server answers while the tokenizers load.
        models = sorted({d.model for r in self._routes.values() for d in r.deployments})
        self._warming = asyncio.create_task(asyncio.to_thread(tokens.warm, models))
        if self.cache is not None:
            self._cache_start = asyncio.create_task(self.cache.start())
        if self.config.conversations.retention_days is not None:
            self._pruning = asyncio.create_task(self._prune_every(PRUNE_SECONDS))

    async def prune_conversations(self) -> int:
        """Delete the conversations idle for longer than `conversations.retention_days`
        (every replica may: it is idempotent)."""
        days = self.config.conversations.retention_days
        if days is None:
            return 0
        try:
            n = await self.store.conversations.prune(self.clock() - days * 86400)
        except Exception as e:  # tried again at the next round
            self.observer.store_error("conversations")
            log.warning("conversation store unreachable (retention): %s", e)
            return 0
        if n:
            log.info("retention: deleted %d conversation(s) idle for %g days", n, days)
        return n

    async def _prune_every(self, seconds: float) -> None:
        while True:
            await self.prune_conversations()
            await asyncio.sleep(seconds)

    async def close(self) -> None:
        if self._pruning is not None:
            self._pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruning
        if self._warming is not None:
            await self._warming
        if self._cache_start is not None:
            with contextlib.suppress(Exception):  # logged when it failed
                await self._cache_start
        if self.cache is not None:
            await self.cache.close()
            if self._cache_client is not None:
                await self._cache_client.aclose()
        await self.alerts.close()
        await self.ledger.close()
        await self.observer.close()
        await self.store.close()

    async def authenticate(self, ctx: CallContext) -> None:
        secret, ctx.api_key = ctx.api_key, None
        try:
            caller = await auth.authenticate(secret, self.store.keys, self.config.auth,
                                             self.clock())
        except TollwayError:
            raise
        except Exception as e:  # the key store is down: a key cannot be checked
            self.observer.store_error("keys")
            log.warning("key store unreachable: %s", e)
            raise Unavailable("The key store is unreachable, so API keys cannot be checked "
                              "right now.", retry_after=5) from e
        ctx.master, ctx.key = caller.master, caller.key
        if caller.key is not None:
            ctx.team = caller.key.team
            if ctx.feature is None and caller.key.features:
                ctx.feature = caller.key.features[0]

    async def chat(self, req: ChatRequest, ctx: CallContext) -> Answer:
        now = self.clock()
        ctx.model_asked, ctx.stream = req.model, req.stream
        if ctx.user is None:
            ctx.user = req.user or (ctx.key.user if ctx.key is not None else None)
        choice = tiers.select(req.model, ctx.tier_header, self.config)
        route = self._resolve(choice.model)
        if ctx.internal is None:  # the gateway's own calls use the models it configured
            auth.check_model(ctx.key, req.model, route.alias)
        policy = (self._guards[route.alias] if ctx.key is None or ctx.key.guards is None
                  else guard_policy.resolve(self.config.guards, route.model.guards,
                                            ctx.key.guards))
        check_limits(req, policy.limits)  # on what the caller sent
        conversation = thread.id_of(req, ctx.stored_conversation)
        if conversation is not None:
            await self._recall(req, ctx, conversation)
        ctx.guards = record = guard_policy.inspect(req, policy)
        rule = (self._history[route.alias] if ctx.history_ask is None else
                history.resolve(self.config.history, route.model.history, ctx.history_ask))
        if rule.policy != "none" or ctx.thread is not None:
            await self._shape_history(req, route, ctx, rule)
        cap_output(req, route.model, self.config, ctx, choice.max_tokens)
        look = None
        if self.cache is not None and self.cache.applies(route.alias):
            look = await self.cache.lookup(req, route.alias, ctx, ctx.cache_ask)
            if look.found is not None:
                hit = await self._cached(req, route, ctx, look, now)
                ctx.cache = look.status
                return await self._keep_turns(ctx, self._restore(hit, record))
            ctx.cache = look.status
        applied = (budget.applicable(self.config.budgets, self._who(ctx), now)
                   if self._budgets or (ctx.key is not None and ctx.key.budgets) else [])
        rate = self._rate_limits(ctx, route)
        input_tokens = None
        short_input_rule = choice.tier and self.config.auto_downgrade.enabled
        if (applied or route.limits.need_count or short_input_rule
                or any(r.metric == "tokens" for r in rate) or self.router.paced(route.chain)):
            input_tokens = await count_request_async(req, route.deployments[0].model)
            lower = await self._downgrade(choice, input_tokens, applied, now, ctx)
            if lower is not None:
                choice, route = lower, self._resolve(lower.model)
                cap_output(req, route.model, self.config, ctx, choice.max_tokens)
                input_tokens = await count_request_async(req, route.deployments[0].model)
        ctx.alias, ctx.tier = route.alias, choice.tier
        ceiling, worst_usd = None, 0.0
        if input_tokens is not None:
            ceiling, worst_usd = self._preflight(req, route, input_tokens, ctx, applied)
        worst_tokens = (input_tokens or 0) + (req.output_limit() or 0) * (req.n or 1)
        if schema_check.wanted(req.response_format):
            # Output that breaks the schema is asked for again: reserve every attempt.
            worst_usd *= 1 + policy.schema_retries
            worst_tokens *= 1 + policy.schema_retries
        if rate:
            ctx.ticket = await self._admit(rate, worst_tokens, now)
        if applied:
            await self._reserve(ctx, applied, worst_usd, worst_tokens, now)
        answer = await self._send(req, route, ctx, input_tokens)
        answer.input_tokens = input_tokens
        answer = await self._guard_output(req, route, ctx, answer, policy, input_tokens)
        answer.cache = look
        if ceiling is not None:
            answer.worst_case_usd = ceiling.worst_case_usd
        if answer.stream is not None:
            # Usage is always requested upstream (it is what we bill on); the client
            # sees the usage event only if it asked for it.
            answer.stream.emit_usage = wants_usage(req)
            if ceiling is not None and input_tokens is not None:
                meter = StreamMeter(answer.stream, ceiling.max_output, input_tokens,
                                    answer.model)
                answer.stream.frames = meter.frames(answer.stream.frames)
                answer.meter = meter
        return await self._keep_turns(ctx, answer)

    def settle(self, answer: Answer) -> Settlement:
        """Price what was used: the provider's reported usage, never our estimate when
        usage exists; without it (a cut or abandoned stream), our count of the input
        and of the output received so far."""
        if answer.cache is not None and answer.cache.found is not None:
            return Settlement(usage=None, cost_usd=0.0, estimated=False,
                              saved_usd=answer.cache.found.cost_usd)
        source = answer.reply if answer.reply is not None else answer.stream
        usage = source.usage if source is not None else None
        cut = answer.meter is not None and answer.meter.cut
        estimated = cut
        if usage is None and answer.input_tokens is not None:
            out = 0
            if answer.meter is not None:
                out = answer.meter.output_tokens
            elif answer.stream is not None:
                out = _output_tokens(answer.stream.received, answer.model)
            usage = Usage(prompt_tokens=answer.input_tokens, completion_tokens=out,
                          total_tokens=answer.input_tokens + out)
            estimated = True
        price = self._prices.get(answer.deployment)
        usd = prices.cost(usage, price) if usage is not None and price is not None else None
        if usd is None and price is not None:
            usd = 0.0
        return Settlement(usage=usage, cost_usd=usd, estimated=estimated, cut=cut)

    async def finish(self, ctx: CallContext, req: ChatRequest | None, answer: Answer | None,
                     error: TollwayError | None = None, *, status: int | None = None,
                     settlement: Settlement | None = None) -> Settlement | None:
        """Exactly once per request, whatever happened: settle the hold to the real
        cost, then record the ledger row, metrics and log line (off the request path)."""
        if ctx.finished:
            return settlement
        ctx.finished = True
        if settlement is None and answer is not None:
            if (answer.input_tokens is None and req is not None and answer.stream is not None
                    and answer.stream.usage is None):
                answer.input_tokens = await count_request_async(req, answer.model)
            settlement = self.settle(answer)
        elif settlement is None and ctx.deployment is not None and req is not None and (
                error is None or status == 499):
            # Abandoned before any answer: the upstream had the prompt.
            n = await count_request_async(req, ctx.deployment.model)
            settlement = self.settle(Answer(ctx.deployment, input_tokens=n))
        if ctx.spent:  # discarded attempts (schema retries) cost what they cost
            settlement = _merged(ctx.spent, settlement)
        record = ctx.guards
        if (answer is not None and answer.stream is not None and error is None
                and record is not None and record.policy is not None
                and record.policy.pii_output != "off"):
            body = _body(answer)
            if body is not None:  # a stream's output is only logged: it has been sent
                guard_policy.check_output("\n".join(
                    t for _, t in output.reply_texts(body) if t), record.policy, record,
                    stream=True)
        usd = (settlement.cost_usd or 0.0) if settlement is not None else 0.0
        tokens = settlement.usage.total_tokens if settlement and settlement.usage else 0
        if ctx.ticket is not None:
            try:
                store = self._local_limits if ctx.ticket.local else self.store.limits
                await rate_limits.settle(store, ctx.ticket, tokens)
            except Exception:
                log.exception("rate-limit settle failed for %s", ctx.request_id)
        hold: Hold | None = ctx.hold
        if hold is not None:
            try:
                await self.store.budgets.settle(hold.id, budget.charges(hold.applied, usd, tokens))
            except Exception:
                log.exception("budget settle failed for %s (the hold expires)", ctx.request_id)
        if answer is not None and answer.paced is not None:
            pacer, ticket = answer.paced
            pacer.settle(ticket, tokens if settlement is not None and settlement.usage else None)
        row = ledger_row(ctx, settlement, error, status)
        self.ledger.record(row)
        self.observer.request(row)
        self.alerts.after(hold.applied if hold is not None else [], usd, self.clock())
        if (answer is not None and answer.cache is not None and error is None
                and status is None and settlement is not None
                and (record is None or record.placeholders is None)):  # never cache restored PII
            await self._remember(answer, answer.cache, settlement)
        return settlement

    def _open_cache(self, config: Config, clock: Callable[[], float]) -> ResponseCache | None:
        c = config.cache
        if not any(for_alias(c, mc.cache).enabled for mc in config.models.values()):
            return None
        store = self.store.cache
        if c.redis_url:  # its own Redis, with the fail-open budget as its socket timeout
            from redis.asyncio import Redis

            from tollway.store.redis import LAYOUT
            from tollway.store.redis_cache import RedisCache

            t = max(c.timeout_ms / 1000, 0.001)
            self._cache_client = Redis.from_url(c.redis_url, socket_timeout=t,
                                                socket_connect_timeout=t)
            store = RedisCache(self._cache_client, f"tw:{LAYOUT}:", c.max_entries)
        return ResponseCache(config, store, clock, lambda: self.observer.store_error("cache"))

    async def _cached(self, req: ChatRequest, route: _Route, ctx: CallContext, look: Lookup,
                      now: float) -> Answer:
        """Answer from the cache: no upstream call, no budget hold, cost 0. Rate limits
        still count the request (with no tokens)."""
        found = look.found
        assert found is not None
        rate = self._rate_limits(ctx, route)
        if rate:
            ctx.ticket = await self._admit(rate, 0, now)
        ctx.alias = route.alias
        ctx.deployment = Deployment(provider="cache", model=found.model)
        answer = Answer(ctx.deployment, cache=look)
        if req.stream:
            answer.stream = replay_stream(found)
            answer.stream.emit_usage = wants_usage(req)
            ctx.first_byte = time.perf_counter()
        else:
            answer.reply = replay_reply(found)
        return answer

    async def _remember(self, answer: Answer, look: Lookup, s: Settlement) -> None:
        """Cache an answer the caller received in full."""
        if self.cache is None or look.found is not None or look.keys is None or s.cut:
            return
        body = _body(answer)
        if body is None:
            return
        await self.cache.remember(look, CachedAnswer(
            model=answer.model, provider=answer.deployment.provider, body=body,
            usage=s.usage, cost_usd=s.cost_usd or 0.0, expires_at=0.0))

    async def _guard_output(self, req: ChatRequest, route: _Route, ctx: CallContext,
                            answer: Answer, policy: guard_policy.GuardPolicy,
                            input_tokens: int | None) -> Answer:
        """The output guards: the JSON schema asked for (retried), PII in a JSON reply,
        and the redacted values put back."""
        record: guard_policy.GuardRecord = ctx.guards
        if schema_check.wanted(req.response_format):
            answer = await self._checked(req, route, ctx, answer, policy, input_tokens)
        if answer.reply is not None and policy.pii_output != "off":
            for message, text in output.reply_texts(answer.reply.body):
                fixed = guard_policy.check_output(text or "", policy, record, stream=False)
                if fixed is not None:
                    message["content"] = fixed
        return self._restore(answer, record)

    async def _checked(self, req: ChatRequest, route: _Route, ctx: CallContext,
                       answer: Answer, policy: guard_policy.GuardPolicy,
                       input_tokens: int | None) -> Answer:
        """The output a request asked for as JSON, checked against its schema; asked for
        again up to `schema_retries` times; never passed on when still wrong. A stream
        is read whole first, then replayed."""
        assert req.response_format is not None
        record: guard_policy.GuardRecord = ctx.guards
        for attempt in range(policy.schema_retries + 1):
            if answer.stream is not None:
                await output.read_all(answer.stream.frames)
            body = _body(answer)
            problem = (output.schema_error(body, req.response_format) if body is not None
                       else "the answer could not be read as a chat completion")
            if problem is None:
                if attempt:
                    record.actions.append(f"schema:retried:{attempt}")
                if answer.stream is not None and body is not None:
                    replay = replay_stream(CachedAnswer(
                        model=answer.model, provider=answer.deployment.provider, body=body,
                        usage=answer.stream.usage, cost_usd=0.0, expires_at=0.0))
                    replay.received = answer.stream.received
                    answer.stream = replay  # `assembled` stays: the same answer
                return answer
            # This attempt is paid for and discarded.
            if answer.input_tokens is None and answer.stream is not None:
                answer.input_tokens = await count_request_async(req, answer.model)
            ctx.spent = [*(ctx.spent or []), self.settle(answer)]
            if attempt < policy.schema_retries:
                answer = await self._send(req, route, ctx, input_tokens)
                answer.input_tokens = input_tokens
        record.actions.append("schema:refused")
        raise InvalidOutput(f"The model's answer did not match the requested "
                            f"response_format after {policy.schema_retries + 1} attempt(s): "
                            f"{problem}. Nothing invalid was passed on.")

    @staticmethod
    def _restore(answer: Answer, record: guard_policy.GuardRecord) -> Answer:
        """Put redacted values back into the reply, when configured."""
        if record.placeholders is None or not record.placeholders.originals:
            return answer
        mapping = record.placeholders.originals
        if answer.reply is not None:  # this request's own body: never cached (see finish)
            output.restore_body(answer.reply.body, mapping)
        elif answer.stream is not None:
            answer.stream.frames = output.restore_frames(answer.stream.frames, mapping)
        return answer

    async def _recall(self, req: ChatRequest, ctx: CallContext, conversation: str) -> None:
        """A stored conversation's history in front of the request's new turns. Fails
        closed: without its history the turn would be answered out of context."""
        if not self.config.conversations.enabled:
            raise InvalidRequest("Server-side conversations are turned off on this gateway "
                                 "(conversations.enabled); send the whole history instead.",
                                 param="x-tollway-conversation")
        t = thread.start(req, thread.owner_of(ctx), conversation)
        try:
            stored = await self.store.conversations.load(t.owner, t.id)
        except Exception as e:
            self.observer.store_error("conversations")
            log.warning("conversation store unreachable: %s", e)
            raise Unavailable(f"The conversation store is unreachable, so conversation "
                              f"'{conversation}' cannot be read right now.",
                              retry_after=5) from e
        thread.assemble(req, t, stored, self.config.conversations.max_turns)
        ctx.thread, ctx.conversation = t, conversation

    async def _keep_turns(self, ctx: CallContext, answer: Answer) -> Answer:
        """Store a conversation's new turns with the reply: a JSON reply before it is
        sent, a stream when it has ended and before the caller sees its end. Either
        way, the caller's next turn finds them, whichever replica it reaches."""
        if ctx.thread is None:
            return answer
        if answer.stream is None:
            await self._save_turns(ctx, answer)
        else:
            answer.stream.frames = self._saved_at_end(answer.stream.frames, ctx, answer)
        return answer

    async def _saved_at_end(self, frames: FrameStream, ctx: CallContext,
                            answer: Answer) -> FrameStream:
        async for f in frames:
            yield f
        await self._save_turns(ctx, answer)

    async def _save_turns(self, ctx: CallContext, answer: Answer) -> None:
        t: thread.Thread = ctx.thread
        found = answer.cache.found if answer.cache is not None else None
        turn = thread.reply_turn(found.body if found is not None else _body(answer))
        s = self.settle(answer)
        used = s.usage.total_tokens if s.usage is not None else 0
        try:
            await self.store.conversations.append(
                t.owner, t.id, t.system, [*t.new, *([turn] if turn is not None else [])],
                used + t.extra_tokens, (s.cost_usd or 0.0) + t.extra_usd, self.clock())
        except Exception:  # the answer is paid for: it still goes to the caller
            self.observer.store_error("conversations")
            log.exception("conversation %s: this turn was not stored", t.id)

    async def _shape_history(self, req: ChatRequest, route: _Route, ctx: CallContext,
                             rule: history.HistoryRule) -> None:
        """Apply the history policy to `req.messages` and say what it sent."""
        model = route.deployments[0].model
        lay = history.layout(req.messages)
        costs = tokens.message_costs(lay.rest, model)
        pinned = sum(tokens.message_costs(lay.pinned, model))
        defs = 0  # function definitions count in the prompt (not as history)
        if req.tools or "functions" in req.extra:
            defs = tokens.count_request(req, model) - tokens.REPLY_PRIMING - pinned - sum(costs)
        fixed = pinned + defs
        if rule.policy == "window":
            kept = history.window(lay, costs, fixed, rule.window_tokens, tokens.REPLY_PRIMING)
        elif rule.policy == "summarise":
            kept = await self._summarised(route, ctx, rule, lay, costs, fixed)
        else:
            kept = history.summarised(lay, costs, fixed, tokens.REPLY_PRIMING, 0, None, 0)
        req.messages = kept.messages
        ctx.history = HistoryOutcome(rule.policy, kept.history_tokens - defs,
                                     max(kept.full_tokens - kept.sent_tokens, 0))

    async def _summarised(self, route: _Route, ctx: CallContext, rule: history.HistoryRule,
                          lay: history.Layout, costs: list[int], fixed: int
                          ) -> history.Kept:
        """The history with a summary for its older turns: the stored one for the
        longest prefix, extended when the prompt has outgrown the threshold again."""
        priming, model = tokens.REPLY_PRIMING, route.deployments[0].model
        alias = rule.summary_model or route.alias
        hashes = history.prefix_hashes(lay, f"{alias}|{rule.summary_max_tokens}")
        owner = ctx.thread.owner if ctx.thread is not None else thread.owner_of(ctx)
        covered, text = 0, None
        try:
            found = await self.store.conversations.summary(
                owner, [hashes[b] for b in sorted(hashes, reverse=True)])
        except Exception as e:  # fail open: summarise afresh
            self.observer.store_error("conversations")
            log.warning("conversation store unreachable (summaries): %s", e)
            found = None
        if found is not None:
            covered = next(b for b, h in hashes.items() if h == found[0])
            text = summary.decode(found[1]).text
        note = summary.message(text) if text is not None else None
        cost = tokens.message_costs([note], model)[0] if note is not None else 0
        fold = history.plan_summary(lay, costs, fixed, priming, covered, cost, rule)
        if fold is None:
            return history.summarised(lay, costs, fixed, priming, covered, note, cost)
        try:
            text = await self._summarise(ctx, alias, rule, text,
                                         lay.rest[fold.start:fold.end])
        except BudgetExceeded:
            raise  # a conversation past its cap stops here: nothing more is sent
        except TollwayError as e:  # no summary this turn: the window keeps it in bounds
            log.warning("summariser failed (%s); trimming to a window instead", e.message)
            return history.window(lay, costs, fixed, rule.summarise_above, priming)
        try:
            await self.store.conversations.put_summary(
                owner, hashes[fold.end], ctx.thread.id if ctx.thread is not None else None,
                summary.encode(summary.Stored(text, fold.end)), self.clock())
        except Exception as e:
            self.observer.store_error("conversations")
            log.warning("conversation store unreachable (summaries): %s", e)
        note = summary.message(text)
        cost = tokens.message_costs([note], model)[0]
        return history.summarised(lay, costs, fixed, priming, fold.end, note, cost)

    async def _summarise(self, ctx: CallContext, alias: str, rule: history.HistoryRule,
                         previous: str | None, turns: list[Any]) -> str:
        """One call to the summary model, through the whole request path: its own ledger
        row, charged to the same key, user, feature and conversation (so a conversation
        past its cap is refused here, before anything is sent)."""
        req = summary.request(alias, previous, turns, rule.summary_max_tokens)
        sub = CallContext(request_id=f"{ctx.request_id}:summary", user=ctx.user,
                          feature=ctx.feature, conversation=ctx.conversation, ip=ctx.ip,
                          key=ctx.key, master=ctx.master, team=ctx.team, internal="summary",
                          history_ask=history.HistoryAsk("none"))
        answer: Answer | None = None
        error: TollwayError | None = None
        try:
            answer = await self.chat(req, sub)
            assert answer.reply is not None  # not streamed
            text = summary.text_of(answer.reply.body)
            if text is None:
                raise InvalidOutput("The summary model returned no text.")
            return text
        except TollwayError as e:
            error = self.scrub(e)
            raise
        finally:
            s = await self.finish(sub, req, answer, error)
            if ctx.thread is not None and s is not None:
                ctx.thread.extra_tokens += s.usage.total_tokens if s.usage is not None else 0
                ctx.thread.extra_usd += s.cost_usd or 0.0

    def _rate_limits(self, ctx: CallContext, route: _Route) -> list[rate_limits.Limit]:
        # Callers without a key (or the master key) are limited by their address.
        return rate_limits.applicable(self.config.rate_limits, ctx.key, ctx.user,
                                      None if ctx.key is not None or ctx.master else ctx.ip,
                                      route.alias)

    def _who(self, ctx: CallContext) -> budget.Who:
        key = ctx.key
        return budget.Who(key_lineage=key.lineage if key is not None else None,
                          key_budgets=tuple(key.budgets) if key is not None else (),
                          team=ctx.team, user=ctx.user, feature=ctx.feature,
                          conversation=ctx.conversation,
                          conversation_owner=(thread.owner_of(ctx) if ctx.conversation
                                              else None))

    async def _downgrade(self, choice: tiers.TierChoice, input_tokens: int,
                         applied: list[budget.Applied], now: float,
                         ctx: CallContext) -> tiers.TierChoice | None:
        """A cheaper tier: for a very short input, or when a budget is nearly spent."""
        lower, why = tiers.downgrade(choice, input_tokens, self.config), "short_input"
        rules = self.config.budgets.downgrade
        if lower is None and applied and choice.tier and rules:
            try:
                levels = await self.store.budgets.levels([a.counter for a in applied], now)
            except Exception as e:  # no levels, no downgrade; the reserve decides
                self.observer.store_error("budgets")
                log.warning("budget store unreachable: %s", e)
                return None
            target = budget.downgrade_target(rules, choice.tier,
                                             budget.used_fraction(applied, levels))
            lower, why = (tiers.named(target, self.config) if target else None), "budget"
        if lower is not None:
            ctx.downgraded_from, ctx.downgrade_reason = choice.tier, why
        return lower

    async def _admit(self, rate: list[rate_limits.Limit], worst_tokens: int,
                     now: float) -> rate_limits.Ticket:
        """Rate limits fail open: with the shared store down, each replica enforces
        them alone (in memory) rather than refusing traffic, and says so."""
        try:
            return await rate_limits.admit(self.store.limits, rate, worst_tokens, now)
        except TollwayError:
            raise
        except Exception as e:
            self.observer.store_error("limits")
            log.warning("rate-limit store unreachable, limiting in this process: %s", e)
            ticket = await rate_limits.admit(self._local_limits, rate, worst_tokens, now)
            ticket.local = True
            return ticket

    async def _reserve(self, ctx: CallContext, applied: list[budget.Applied], usd: float,
                       tokens: int, now: float) -> None:
        cfg = self.config.budgets
        hold = Hold("hold_" + os.urandom(10).hex(), applied)
        claims = budget.claims(applied, usd, tokens)
        # Recorded before the store is asked: if the client leaves while the reserve is
        # in flight, `finish` still settles the hold (to 0) instead of leaving it held
        # until it expires; the store never takes a hold that was settled first.
        ctx.hold = hold
        try:
            got = await self.store.budgets.reserve(hold.id, claims, now + cfg.hold_seconds, now)
        except Exception as e:  # the hold may have been taken: `finish` settles it anyway
            self.observer.store_error("budgets")
            if cfg.on_store_error == "open":
                log.warning("budget store unreachable, request let through unmetered: %s", e)
                return
            raise Unavailable("The budget store is unreachable, so spending is paused "
                              "(budgets.on_store_error: closed).", retry_after=5) from e
        if got.refused is not None:
            ctx.hold = None
            i = got.refused
            raise budget.refusal(applied[i], got.levels[i], claims[i].amount,
                                 cfg.refuse_status, now)
        ctx.remaining_usd = budget.remaining_usd(applied, got.levels)

    def _resolve(self, name: str) -> _Route:
        found = self.config.resolve(name)
        if found is None:
            known = ", ".join(self.config.public_models()) or "(none configured)"
            raise ModelNotFound(f"The model '{name}' does not exist on this gateway. "
                                f"Available models: {known}.", param="model")
        return self._routes[found[0]]

    def _preflight(self, req: ChatRequest, route: _Route, input_tokens: int,
                   ctx: CallContext, applied: list[budget.Applied]
                   ) -> tuple[cost.CeilingDecision | None, float]:
        """Checks before sending; returns the ceiling decision and the worst case in
        USD at the dearest deployment (what budgets reserve)."""
        limits = route.limits
        cost.check_input_length(input_tokens, limits)
        dollar_limit = limits.max_cost_usd is not None or any(a.metric == "usd" for a in applied)
        # The worst case must hold for whichever deployment ends up answering.
        dearest: tuple[float, prices.Price, Deployment] | None = None
        for dep in route.deployments:
            price = self._prices[dep]
            if price is None:
                cost.refuse_unpriced(dep.model, self.config.server.unpriced, dollar_limit)
                continue
            w = prices.worst_case(input_tokens, (req.output_limit() or 0) * (req.n or 1), price)
            if dearest is None or w > dearest[0]:
                dearest = (w, price, dep)
        if dearest is None:
            return None, 0.0
        decision = cost.fit_ceiling(req, input_tokens, dearest[1], limits, dearest[2].model)
        if decision is None:
            return None, dearest[0]
        if decision.clamped:
            ctx.max_tokens_clamped = "cost_ceiling"
            output = (req.output_limit() or 0) * (req.n or 1)
            return decision, max(prices.worst_case(input_tokens, output, p)
                                 for d in route.deployments
                                 if (p := self._prices[d]) is not None)
        return decision, dearest[0]

    async def _send(self, req: ChatRequest, route: _Route, ctx: CallContext,
                    input_tokens: int | None) -> Answer:
        tokens = (input_tokens or 0) + (req.output_limit() or 0) * (req.n or 1)
        sent = await self.router.send(req, route.chain, ctx, tokens)
        if sent.stream is not None:
            # stream() returns once the upstream sent its first event.
            ctx.first_byte = time.perf_counter()
        return Answer(sent.deployment, reply=sent.reply, stream=sent.stream, paced=sent.paced)


def _body(answer: Answer) -> dict[str, Any] | None:
    """The answer as a chat.completion: the reply's, or the finished stream's."""
    if answer.reply is not None:
        return answer.reply.body
    if answer.assembled is None and answer.stream is not None:
        answer.assembled = body_of_stream(answer.stream.received, answer.model)
    return answer.assembled


def _output_tokens(seen: list[bytes], model: str) -> int:
    events, _ = split_events(b"".join(seen))
    return sum(output_tokens_of(data, model) for _, data in events)


# Row ids: a random prefix per process and a counter (unique across a fleet, and
# cheaper than fresh randomness per request).
_ROW_PREFIX = "row_" + os.urandom(6).hex() + "_"
_row_seq = itertools.count()


def ledger_row(ctx: CallContext, s: Settlement | None, error: TollwayError | None,
               status: int | None) -> LedgerRow:
    dep = ctx.deployment
    usage = s.usage if s is not None else None
    end = time.perf_counter()
    if status is None:
        status = error.status if error is not None else 200
    if status == 499:
        outcome = "aborted"
    elif error is not None:
        outcome = "refused" if error.status < 500 and error.upstream_status is None else "error"
    else:
        outcome = "cut" if s is not None and s.cut else "ok"
    return LedgerRow(
        id=f"{_ROW_PREFIX}{next(_row_seq)}", request_id=ctx.request_id, ts=ctx.started,
        status=status, outcome=outcome,
        key_id=ctx.key.id if ctx.key is not None else None,
        key_lineage=ctx.key.lineage if ctx.key is not None else ("master" if ctx.master else None),
        user=ctx.user, team=ctx.team, feature=ctx.feature, conversation=ctx.conversation,
        model_asked=ctx.model_asked, model=dep.model if dep is not None else None,
        provider=dep.provider if dep is not None else None, tier=ctx.tier,
        downgraded_from=ctx.downgraded_from, stream=ctx.stream,
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
        cached_tokens=usage.cached_tokens if usage else 0,
        cost_usd=(s.cost_usd or 0.0) if s is not None else 0.0,
        priced=s is None or s.cost_usd is not None,
        estimated=s is not None and s.estimated,
        latency_ms=round((end - ctx.t0) * 1000, 3),
        ttft_ms=(round((ctx.first_byte - ctx.t0) * 1000, 3) if ctx.first_byte is not None
                 else None),
        error=error.type if error is not None else None,
        retries=ctx.retries, fallback_from=ctx.fallback_from,
        saved_usd=s.saved_usd if s is not None else 0.0, cache=ctx.cache,
        guards=ctx.guards.summary() if ctx.guards is not None else None,
        history_tokens=ctx.history.tokens if ctx.history is not None else None,
        history_saved_tokens=ctx.history.saved_tokens if ctx.history is not None else None)


def _merged(spent: list[Settlement], last: Settlement | None) -> Settlement:
    """One settlement for several attempts: tokens and dollars added up."""
    parts = [*spent, *([last] if last is not None else [])]
    usages = [p.usage for p in parts if p.usage is not None]
    usage = Usage(prompt_tokens=sum(u.prompt_tokens for u in usages),
                  completion_tokens=sum(u.completion_tokens for u in usages),
                  total_tokens=sum(u.total_tokens for u in usages),
                  cached_tokens=sum(u.cached_tokens for u in usages)) if usages else None
    costs = [p.cost_usd for p in parts]
    return Settlement(usage=usage, cost_usd=None if any(c is None for c in costs)
                      else sum(c or 0.0 for c in costs),
                      estimated=any(p.estimated for p in parts),
                      cut=last is not None and last.cut,
                      saved_usd=last.saved_usd if last is not None else 0.0)


def cap_output(req: ChatRequest, model: ModelConfig, config: Config, ctx: CallContext,
               tier_cap: int | None = None) -> None:
    """No limit -> the default; above the hard cap (or the tier's cap) -> clamped, and
    the reply says so in a header."""
    default = model.default_max_tokens or config.server.default_max_tokens
    cap = model.max_tokens_cap or config.server.max_tokens_cap
    reason = "cap"
    if tier_cap is not None and tier_cap < cap:
        cap, reason = tier_cap, "tier"
    asked = req.output_limit()
    if asked is None:
        limit = min(default, cap)
    elif asked > cap:
        limit, ctx.max_tokens_clamped = cap, reason
    else:
        return
    if req.max_completion_tokens is not None:
        req.max_completion_tokens = limit
    else:
        req.max_tokens = limit


def wants_usage(req: ChatRequest) -> bool:
    return req.stream_options is not None and req.stream_options.include_usage
