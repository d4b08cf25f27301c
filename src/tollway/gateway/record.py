"""A finished call as its ledger row (from which the metrics and the access log are
made too)."""

from __future__ import annotations

import time

from tollway.accounting.rows import LedgerRow
from tollway.accounting.settlement import Answered, Failed, Outcome, Settlement
from tollway.errors import TollwayError
from tollway.gateway.call import CHAT, Call


def ledger_row(call: Call, outcome: Outcome, s: Settlement) -> LedgerRow:
    caller, dep, usage = call.caller, call.attempts.deployment, s.usage
    plan, history, conversation = call.plan, call.history, call.conversation
    error: TollwayError | None = None
    # The status the caller got: 200 (a stream that began and ended), the error's, or
    # 499 for a client that went away.
    if isinstance(outcome, Answered):
        status, name = 200, "cut" if s.cut else "ok"
    elif isinstance(outcome, Failed):
        error = outcome.error
        status = error.status
        name = "refused" if status < 500 and error.upstream_status is None else "error"
    else:
        status, name = 499, "aborted"
    row = LedgerRow(
        id=call.row_id, request_id=call.request_id, ts=call.started,
        status=status, outcome=name,
        key_id=caller.key.id if caller.key is not None else None,
        key_lineage=(caller.key.lineage if caller.key is not None
                     else "master" if caller.master else None),
        user=caller.user, team=caller.team, feature=caller.feature,
        conversation=conversation,
        # Its budgets are counted per owner (policy/budget.py).
        conversation_owner=caller.owner if conversation is not None else None,
        model_asked=call.model_asked,
        model=dep.model if dep is not None else None,
        provider=dep.provider if dep is not None else None,
        tier=plan.tier if plan is not None else None,
        downgraded_from=plan.downgraded_from if plan is not None else None,
        stream=call.stream,
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
        cached_tokens=usage.cached_tokens if usage else 0,
        cost_usd=s.usd, priced=s.cost_usd is not None, estimated=s.estimated,
        latency_ms=round((time.perf_counter() - call.t0) * 1000, 3),
        ttft_ms=(round((call.first_byte - call.t0) * 1000, 3) if call.first_byte is not None
                 else None),
        error=error.type if error is not None else None,
        retries=call.attempts.retries, fallback_from=call.attempts.fallback_from,
        saved_usd=s.saved_usd, cache=call.cache.status if call.cache is not None else None,
        guards=call.guards.summary() if call.guards is not None else None,
        history_tokens=history.tokens if history is not None else None,
        history_saved_tokens=history.saved_tokens if history is not None else None)
    if call.kind is not CHAT:
        row.kind = call.kind
    if call.batch is not None:
        row.batch_id = call.batch
    if call.trace is not None:
        row.trace_id = call.trace.trace_id
    return row
