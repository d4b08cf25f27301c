"""What a request cost, from what happened to it: the provider's usage when it gave one
(at the batch rates for an answer from a provider's batch), our own count otherwise —
of the input, of the output received, and for a stream the client abandoned, of what
was still in flight (`accounting/inflight.py`). `Pipeline.priced` works it out once."""

from __future__ import annotations

import time
from collections.abc import Callable

from tollway.accounting import inflight, settlement
from tollway.accounting.meter import StreamMeter, received_output_tokens
from tollway.accounting.prices import Price
from tollway.accounting.settlement import Aborted, Failed, Outcome, Settlement
from tollway.gateway.call import Call
from tollway.types import Answer, Deployment

PriceOf = Callable[[Deployment], Price | None]


async def outcome(call: Call, out: Outcome, price_of: PriceOf) -> Settlement:
    """The request's cost however it ended: a cache hit is free, an answer is priced,
    a request abandoned before any answer is billed its prompt (the upstream had it)."""
    if out.answer is not None:
        found = call.cache.found if call.cache is not None else None
        if found is not None:
            return settlement.cache_hit(found.cost_usd)
        return await answer(call, out.answer, call.meter, price_of, out)
    dep = call.attempts.deployment
    cut_off = isinstance(out, Aborted) or (isinstance(out, Failed) and out.cut_off)
    if cut_off and dep is not None and call.count is not None:
        n = await call.count.of(dep.model)
        return settlement.estimated(n, 0, price_of(dep))
    return settlement.ZERO


async def answer(call: Call, ans: Answer, meter: StreamMeter | None, price_of: PriceOf,
                 out: Outcome | None = None) -> Settlement:
    """One answer's cost (the one delivered, or one the output guards threw away)."""
    price = price_of(ans.deployment)
    cut = meter is not None and meter.cut
    source = ans.reply if ans.reply is not None else ans.stream
    usage = source.usage if source is not None else None
    if usage is not None or call.count is None:
        batch = ans.reply is not None and ans.reply.batch
        return settlement.priced(usage, price, estimated=cut, cut=cut, batch=batch)
    if ans.stream is None:  # a JSON reply without usage: the count, if one was made
        n = call.plan.input_tokens if call.plan is not None else None
        return (settlement.estimated(n, 0, price, cut=cut) if n is not None
                else settlement.priced(None, price, cut=cut))
    n = await call.count.of(ans.model)
    got = (meter.output_tokens if meter is not None
           else received_output_tokens(ans.stream.received, ans.model))
    if isinstance(out, Aborted) and not cut:
        gen = inflight.generated(ans.stream, got, ans.model, time.monotonic())
        if gen.usage is not None:
            return settlement.priced(gen.usage, price, estimated=True)
        got = gen.output
    return settlement.estimated(n, got, price, cut=cut)
