"""The request path, in order. Every chat request, from HTTP or from Python, goes
through `Pipeline.chat`, top to bottom:

    1. begin: what was asked, the end user the body names (and, when traffic is
       captured for replay, the turn as it came)                (gateway/capture.py)
    2. route: the tier, the alias, may the key use it          (gateway/routes.py)
    3. input limits, on what the caller sent                   (guards/validate.py)
    4. recall: a stored conversation's turns in front           (conversation/memory.py)
    5. input guards: prompt injection, PII                      (guards/policy.py)
    6. degrade as budgets fill (a cheaper tier, harder summarising) (policy/plan.py);
       shape: the history policy (window, summarise)            (conversation/memory.py)
   6b. route on the latest turn: maybe the alias's cheap tier   (gateway/turns.py)
    7. cap the output; a very short input to a cheaper tier     (policy/plan.py)
       (every change of model is made before the cache: it keys on the model that answers)
    8. look in the cache; a hit is answered here, at no cost    (cache/response.py)
    9. plan: count, pre-flight, worst case                      (policy/plan.py)
   10. admit: rate limits, then hold the worst case on budgets  (policy/admission.py)
       (a batch's line was admitted with its batch: it only names the budgets its
       prepaid hold is settled on)
   11. send: a deployment, retried and fallen back              (routing/router.py)
       (a batch's line, to a deployment with a batch API: with its batch's others,
       to the provider's batch API at its price          (gateway/upstream_batch.py))
   12. output guards: the schema asked for, PII, restore        (guards/answer.py)
   13. deliver: meter a stream at the cost ceiling, and store a conversation's turns
       once the answer is whole                                 (conversation/memory.py)

and then `finish`, once, on every path (answered, failed, aborted): price the outcome
once, unwind what the stages took (newest first: the cache fill, the pacing pass, the
budget hold, the rate-limit entry — each given back with the real figures), then the
ledger row, the metrics and log line, the spend alerts, and a captured turn buffered.
`gateway/call.py` says which step writes which part of the request's record.

An embeddings request goes through `Pipeline.embed`: the same stages, fewer of them
(no conversation, guards or output to cap or check), and the same `finish`:

    1. begin; 2. route (a model that only chats is a 400); the dimensions it may ask
    for; 8. the cache (exact only); 9. plan: count, pre-flight, worst case (its input);
    10. admit; 11. send.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tollway import tracing
from tollway.accounting import settlement
from tollway.accounting.meter import StreamMeter
from tollway.accounting.settlement import Aborted, Answered, Failed, Outcome, Settlement
from tollway.cache.entry import CachedAnswer
from tollway.cache.response import Lookup, ResponseCache
from tollway.conversation import history, summary, thread
from tollway.conversation.memory import HistoryOutcome, Memory, Summary
from tollway.errors import InvalidOutput, TollwayError
from tollway.gateway import pricing
from tollway.gateway.call import Call
from tollway.gateway.capture import Capture
from tollway.gateway.record import ledger_row
from tollway.gateway.routes import Route, Routes
from tollway.gateway.turns import TurnRouter
from tollway.gateway.upstream_batch import UpstreamBatches
from tollway.guards import answer as output_guards
from tollway.guards import policy as guard_policy
from tollway.guards.validate import check as check_limits
from tollway.observe import Observer
from tollway.policy.admission import Admission, Admitter
from tollway.policy.alerts import Alerts
from tollway.policy.limits import Limit
from tollway.policy.plan import Plan, Planner
from tollway.providers.openai_batch import NoBatchApi
from tollway.routing.router import Router
from tollway.store.ledger_writer import Ledger
from tollway.types import Answer, ChatRequest, Deployment, EmbeddingRequest, Reply
from tollway.wire import replay, sse
from tollway.wire import responses as responses_wire


@dataclass(frozen=True, slots=True)
class Stages:
    """The stages the pipeline calls, built by `Gateway` from the configuration."""

    routes: Routes
    guards: guard_policy.Policies
    memory: Memory
    planner: Planner
    cache: ResponseCache | None
    admission: Admitter
    router: Router
    ledger: Ledger
    observer: Observer
    alerts: Alerts
    scrub: Callable[[TollwayError], TollwayError]
    clock: Callable[[], float]
    turns: TurnRouter | None = None  # routing on the latest turn, when an alias uses it
    upstream: UpstreamBatches | None = None  # batch lines to the providers' batch APIs
    capture: Capture | None = None  # traffic recorded for `tollway replay`, when asked


class Pipeline:
    def __init__(self, stages: Stages) -> None:
        self.s = stages

    async def chat(self, call: Call, req: ChatRequest) -> Answer:
        s, now = self.s, self.s.clock()
        count = call.begin(req)
        if call.prepaid:  # a batch's line: the hold its batch took is settled however it ends
            call.admission = s.admission.prepaid(call.row_id, call.releases)
        if s.capture is not None and call.internal is None:  # before anything reshapes it
            call.captured = s.capture.begin(
                req, call.caller, call.asks.conversation or call.asks.stored_conversation)
        route, choice = s.routes.choose(req.model, call.asks.tier, call.caller.key,
                                        call.internal is not None, call.releases)
        policy = s.guards.of(route.alias, call.caller.key)
        check_limits(req, policy.limits)  # on what the caller sent
        conversation = thread.id_of(req, call.asks.stored_conversation)
        if conversation is not None:
            call.thread = await s.memory.recall(req, call.caller, conversation)
        call.guards = (tracing.timed("tollway.guards.input", guard_policy.inspect, req, policy)
                       if tracing.ON else guard_policy.inspect(req, policy))  # all sent up
        applied = s.admission.budgets(call.caller, call.conversation, now)
        asked, tier, degraded = route, choice.tier, None
        if applied:  # budgets filling up: a cheaper tier, harder summarising
            route, choice, degraded = await s.planner.degrade(
                route, choice, s.routes.resolve, applied, now, summarising=call.internal is None)
        rule = s.memory.rule(route.alias, route.model.history, call.asks.history,
                             degraded.summarise_above if degraded is not None else None)
        if rule.policy != "none" or call.thread is not None:
            call.history = await self._shape(call, req, route, rule)
        if req.native is not None and (call.guards.redacted or call.thread is not None or (
                call.history is not None and call.history.saved_tokens > 0)):
            responses_wire.as_sent(req, "redacted personal data" if call.guards.redacted
                                   else "reshaped the conversation")
        turn = None
        if s.turns is not None and s.turns.applies(route.alias, choice):
            route, choice, turn = await s.turns.route(req, route, choice)
        plan = call.plan = s.planner.cap(req, route, choice, degraded, tier)
        if turn is not None:
            plan.route_reason = turn.reason
            if turn.cheap:  # said on a cache hit too (planning, which also says it, is skipped)
                plan.tier, plan.downgraded_from = choice.tier, turn.asked
                plan.downgrade_reason = "latest_turn"
        if choice.tier:  # a very short input: a cheaper tier
            route = await s.planner.downgrade(plan, req, route, choice, s.routes.resolve, count)
        if s.cache is not None and s.cache.applies(route.alias):  # keyed by who answers
            look = s.cache.lookup(req, route.alias, call.caller, call.asks.cache, route.name)
            call.cache = await (tracing.traced("tollway.cache.lookup", look) if tracing.ON
                                else look)
        # (A batch's line takes no rate limit: its batch paces it, and refused it could
        # not run again under its row id.)
        rate = [] if call.prepaid else s.admission.rate_limits(call.caller, asked.alias)
        if call.cache is not None and call.cache.found is not None:
            return await self._from_cache(call, req, call.cache, rate, now)
        await s.planner.complete(
            plan, req, route, count=count, applied=applied,
            must_count=any(r.metric == "tokens" for r in rate) or s.router.paced(route.chain),
            attempts=output_guards.attempts(req, policy))
        if call.prepaid:  # held with its batch: its real cost is settled on these budgets
            s.admission.charge(call.admission, applied)
        elif rate or applied:
            call.admission = Admission()
            admit = s.admission.admit(call.admission, rate, applied, plan.worst_usd,
                                      plan.worst_tokens, now, call.releases, call.row_id)
            await (tracing.traced("tollway.admission", admit) if tracing.ON else admit)
        answer = await self._send(call, req, route)
        if output_guards.apply(req, policy, call.guards):
            checked = output_guards.checked(
                req, policy, call.guards, answer, lambda: self._send(call, req, route),
                lambda discarded: self._discard(call, discarded))
            answer = await (tracing.traced("tollway.guards.output", checked) if tracing.ON
                            else checked)
        self._fill_cache(call)
        return await self._deliver(call, req, answer)

    async def embed(self, call: Call, req: EmbeddingRequest) -> Answer:
        s, now = self.s, self.s.clock()
        count = call.begin_embeddings(req)
        if call.prepaid:  # a batch's line: the hold its batch took is settled however it ends
            call.admission = s.admission.prepaid(call.row_id, call.releases)
        route, choice = s.routes.choose_embeddings(req.model, call.asks.tier, call.caller.key,
                                                   call.releases)
        route.serves.check_dimensions(req.dimensions, route.name)
        plan = call.plan = Plan()
        if s.cache is not None and s.cache.applies(route.alias):
            look = s.cache.lookup_embeddings(req, route.alias, call.caller, call.asks.cache,
                                             route.name)
            call.cache = await (tracing.traced("tollway.cache.lookup", look) if tracing.ON
                                else look)
        rate = [] if call.prepaid else s.admission.rate_limits(call.caller, route.alias)
        if call.cache is not None and call.cache.found is not None:
            found = call.cache.found
            dep = await self._hit(call, found, rate, now)
            return Answer(dep, reply=Reply(found.body, found.model, found.usage))
        applied = s.admission.budgets(call.caller, call.conversation, now)
        await s.planner.embedding(
            plan, route, choice, count, applied,
            must_count=any(r.metric == "tokens" for r in rate) or s.router.paced(route.chain))
        if call.prepaid:  # held with its batch: its real cost is settled on these budgets
            s.admission.charge(call.admission, applied)
        elif rate or applied:
            call.admission = Admission()
            admit = s.admission.admit(call.admission, rate, applied, plan.worst_usd,
                                      plan.worst_tokens, now, call.releases, call.row_id)
            await (tracing.traced("tollway.admission", admit) if tracing.ON else admit)
        answer = await self._batched(call, req, route) if call.batch is not None else None
        if answer is None:
            answer = await s.router.send(req, route.chain, call.attempts, plan.attempt_tokens,
                                         call.releases)
        self._fill_cache(call)
        return answer

    async def finish(self, call: Call, outcome: Outcome) -> Settlement:
        """Exactly once per request, whatever happened: price it, give back what it
        took, and record it."""
        if call.finished:
            return call.settlement or settlement.ZERO
        call.finished = True
        s = await self.priced(call, outcome)
        if call.releases.pending:  # the store calls that settle holds, among others
            unwind = call.releases.unwind(outcome, s, call.request_id)
            await (tracing.traced("tollway.settle", unwind) if tracing.ON else unwind)
        row = ledger_row(call, outcome, s)
        if call.trace is not None:  # the request's span, told what its row says
            tracing.describe(call.trace, row, outcome.answer)
        self.s.ledger.record(row)
        self.s.observer.request(row, call.attempts.retried)
        if isinstance(outcome, Failed) and outcome.answer is not None:
            self.s.router.broke(outcome.answer, outcome.error)
        held = call.admission.held if call.admission is not None else []
        self.s.alerts.after(held, s.usd, self.s.clock())
        if self.s.capture is not None and call.captured is not None:
            self.s.capture.end(call.captured, outcome)
        return s

    async def priced(self, call: Call, outcome: Outcome) -> Settlement:
        """What the request cost, worked out once: the stream trailer, the reply
        headers, the conversation store and the ledger all read this figure."""
        if call.settlement is None:
            s = await pricing.outcome(call, outcome, self.s.routes.price)
            call.settlement = settlement.merged(call.spent, s) if call.spent else s
        return call.settlement

    async def _shape(self, call: Call, req: ChatRequest, route: Route,
                     rule: history.HistoryRule) -> HistoryOutcome | None:
        return await self.s.memory.shape(req, rule, route.alias, route.deployments[0].model,
                                         call.caller.owner, call.thread,
                                         lambda sub: self._summarise(call, sub))

    def _fill_cache(self, call: Call) -> None:
        """A miss is kept once the caller has the answer whole — never one with
        restored PII in it."""
        look, cache = call.cache, self.s.cache
        if (cache is not None and look is not None and look.keys is not None
                and (call.guards is None or call.guards.placeholders is None)):
            call.releases.push("cache fill", cache.filler(look))

    async def _send(self, call: Call, req: ChatRequest, route: Route) -> Answer:
        assert call.plan is not None
        if call.batch is not None and req.native is None:  # a batch's line: maybe upstream's
            batched = await self._batched(call, req, route)
            if batched is not None:
                return batched
        answer = await self.s.router.send(req, route.chain, call.attempts,
                                          call.plan.attempt_tokens, call.releases)
        if answer.stream is not None:  # stream() returns once the first event is in
            call.first_byte = time.perf_counter()
        return answer

    async def _batched(self, call: Call, req: ChatRequest | EmbeddingRequest, route: Route
                       ) -> Answer | None:
        """A batch's line sent with its batch's others to the provider's batch API, when
        its route's deployment has one (gateway/upstream_batch.py); None to send it as
        an interactive request (no batch API)."""
        up = self.s.upstream
        dep = up.deployment(route.deployments) if up is not None and call.batch else None
        if up is None or dep is None or call.batch is None:
            return None
        call.attempts.deployment = dep
        try:
            reply = await up.send(call.batch, dep, req)
        except NoBatchApi:
            return None
        return Answer(dep, reply=reply)

    async def _discard(self, call: Call, answer: Answer) -> None:
        """An attempt the output guards threw away: paid for, billed with the rest."""
        call.spent = (*call.spent, await pricing.answer(call, answer, None,
                                                         self.s.routes.price))

    async def _deliver(self, call: Call, req: ChatRequest, answer: Answer) -> Answer:
        """The answer as it goes out: a stream metered at the cost ceiling and its
        output PII logged once it ends; a conversation's turns stored with it."""
        stream, plan, record = answer.stream, call.plan, call.guards
        if stream is not None:
            # Usage is always requested upstream (it is what we bill on); the client
            # sees the usage event only if it asked for it.
            stream.emit_usage = wants_usage(req)
            limit = req.output_limit()
            stream.max_output = limit * (req.n or 1) if limit is not None else None
            if plan is not None and plan.ceiling is not None and plan.input_tokens is not None:
                call.meter = StreamMeter(stream, plan.ceiling.max_output, plan.input_tokens,
                                         answer.model)
                stream.frames = call.meter.frames(stream.frames)
            if record is not None and output_guards.wants_stream_log(record):
                stream.frames = sse.then(stream.frames,
                                         lambda: output_guards.log_stream(answer, record))
        if call.thread is not None:
            await self._kept(call, answer, None)
        return answer

    async def _from_cache(self, call: Call, req: ChatRequest, look: Lookup,
                          rate: list[Limit], now: float) -> Answer:
        """Answer from the cache: no upstream call, no budget hold, cost 0. Rate limits
        still count the request (with no tokens)."""
        found = look.found
        assert found is not None and call.guards is not None
        dep = await self._hit(call, found, rate, now)
        if req.stream:
            answer = Answer(dep, stream=replay.stream(found.body, found.model, found.usage))
            answer.stream.emit_usage = wants_usage(req)  # type: ignore[union-attr]
            call.first_byte = time.perf_counter()
        else:
            answer = Answer(dep, reply=replay.reply(found.body, found.model, found.usage))
        answer = output_guards.restore(answer, call.guards)
        if call.thread is not None:
            await self._kept(call, answer, found.body)
        return answer

    async def _hit(self, call: Call, found: CachedAnswer, rate: list[Limit],
                   now: float) -> Deployment:
        """A cache hit's admission (the rate limits, with no tokens) and its deployment."""
        if rate:
            ticket = await self.s.admission.take(rate, 0, now, call.releases)
            call.admission = Admission(ticket=ticket)
        dep = call.attempts.deployment = Deployment(provider="cache", model=found.model)
        return dep

    async def _kept(self, call: Call, answer: Answer, stored: dict[str, Any] | None) -> None:
        """Store a conversation's new turns with the reply: a JSON reply before it is
        returned, a stream once it has ended and before the caller sees its end —
        either way its next turn finds them, whichever replica it reaches."""
        t = call.thread
        assert t is not None

        async def keep() -> None:
            s = await self.priced(call, Answered(answer))
            body = stored if stored is not None else sse.body_of(answer)
            if call.guards is not None:
                body = output_guards.as_sent(body, call.guards)
            await self.s.memory.keep(t, body, s)

        if answer.stream is None:
            await keep()
        else:
            answer.stream.frames = sse.then(answer.stream.frames, keep)

    async def _summarise(self, parent: Call, req: ChatRequest) -> Summary:
        """One call to the summary model through this whole path, charged to the same
        caller and conversation (so a conversation past its cap is refused here, before
        anything is sent), with its own ledger row."""
        sub = parent.internal_call("summary", history.HistoryAsk("none"))
        outcome: Outcome = Aborted()
        text: str | None = None
        try:
            answer = await self.chat(sub, req)
            outcome = Answered(answer)
            assert answer.reply is not None  # not streamed
            text = summary.text_of(answer.reply.body)
            if text is None:
                outcome = Failed(InvalidOutput("The summary model returned no text."), answer)
        except TollwayError as e:
            outcome = Failed(self.s.scrub(e))
        finally:
            spent = await self.finish(sub, outcome)
        return Summary(text, spent, outcome.error if isinstance(outcome, Failed) else None)


def wants_usage(req: ChatRequest) -> bool:
    return req.stream_options is not None and req.stream_options.include_usage
