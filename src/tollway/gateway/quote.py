"""What a batch line may cost at worst, and on which budgets, before it is queued (a
batch holds its lines' worst cases when it is created: policy/admission.hold_many).

Steps 1-3, 7 and 9 of the request path (gateway/pipeline.py) as `chat` / `embed` would
take them on the route asked for — route, key, input limits, cap, count, worst case;
routing on the latest turn and degrading only go cheaper. It raises what the line would
be refused with; nothing is held, sent or recorded."""

from __future__ import annotations

from tollway.accounting import settlement
from tollway.accounting.settlement import Aborted
from tollway.gateway.call import Call
from tollway.gateway.pipeline import Stages
from tollway.guards import answer as output_guards
from tollway.guards.validate import check as check_limits
from tollway.policy.budget import Applied
from tollway.policy.plan import Plan
from tollway.types import ChatRequest, EmbeddingRequest


async def worst_case(s: Stages, call: Call, req: ChatRequest | EmbeddingRequest
                     ) -> tuple[float, int, list[Applied]]:
    """(dollars, tokens, the budgets that apply) at worst for `req`."""
    now = s.clock()
    try:
        if isinstance(req, EmbeddingRequest):
            count_in = call.begin_embeddings(req)
            route, choice = s.routes.choose_embeddings(req.model, call.asks.tier,
                                                       call.caller.key, call.releases)
            applied = s.admission.budgets(call.caller, call.conversation, now)
            plan = Plan()
            await s.planner.embedding(plan, route, choice, count_in, applied, True)
            return plan.worst_usd, plan.worst_tokens, applied
        count = call.begin(req)
        route, choice = s.routes.choose(req.model, call.asks.tier, call.caller.key, False,
                                        call.releases)
        policy = s.guards.of(route.alias, call.caller.key)
        check_limits(req, policy.limits)
        applied = s.admission.budgets(call.caller, call.conversation, now)
        plan = s.planner.cap(req, route, choice)
        await s.planner.complete(plan, req, route, count=count, applied=applied,
                                 must_count=True, attempts=output_guards.attempts(req, policy))
        return plan.worst_usd, plan.worst_tokens, applied
    finally:
        if call.releases.pending:  # a wildcard route's hold on its deployment
            await call.releases.unwind(Aborted(), settlement.ZERO, call.request_id)
