"""How a request ended, what it cost, and giving back what it took.

A request ends one of three ways (`Outcome`): answered, failed, or aborted by the
client. It is priced once (`Settlement`): the provider's reported usage, never our
estimate when usage exists; without it (a stream cut at the cost ceiling, abandoned,
or a provider that reported none), our count of the input and of the output received.
The stream trailer, the reply headers, the conversation store and the ledger all read
that one figure.

What a request takes on its way (a rate-limit entry, a budget hold, a pacing slot, a
cache fill) is given back by a `Release` that the stage taking it pushed onto the
request's `Releases`; `finish` runs them in reverse order with the settlement, on every
path.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from tollway.accounting import prices
from tollway.accounting.prices import Price
from tollway.errors import TollwayError
from tollway.types import Answer, Usage

log = logging.getLogger("tollway")


# These are made on every request: msgspec Structs, several times cheaper to build
# than dataclasses.
class Answered(msgspec.Struct, frozen=True):
    """The caller got the whole answer (a stream: up to its end)."""

    answer: Answer


class Failed(msgspec.Struct, frozen=True):
    """An error went back to the caller: before anything was sent upstream, from the
    upstream, or in-band after a stream began (`answer` is then what had begun)."""

    error: TollwayError
    answer: Answer | None = None
    # Ended by the gateway itself while under way (the shutdown's drain deadline): like
    # an abort, the upstream may have had the prompt.
    cut_off: bool = False


class Aborted(msgspec.Struct, frozen=True):
    """The client went away before it had everything (status 499)."""

    answer: Answer | None = None


Outcome = Answered | Failed | Aborted


class Settlement(msgspec.Struct, frozen=True):
    """What a request cost."""

    usage: Usage | None
    cost_usd: float | None  # None: the model has no price
    estimated: bool = False  # usage is our count (stream cut, abandoned, none reported)
    cut: bool = False  # stopped at the per-request cost ceiling
    saved_usd: float = 0.0  # a cache hit: what the original call cost

    @property
    def tokens(self) -> int:
        """Input + output, as token budgets and limits count them and the ledger's
        row adds up (a provider's own `total_tokens` may count otherwise)."""
        u = self.usage
        return u.prompt_tokens + u.completion_tokens if u is not None else 0

    @property
    def usd(self) -> float:
        return self.cost_usd or 0.0


ZERO = Settlement(usage=None, cost_usd=0.0)  # nothing reached a model


def priced(usage: Usage | None, price: Price | None, *, estimated: bool = False,
           cut: bool = False, batch: bool = False) -> Settlement:
    """`usage` at `price` (its batch rates for `batch`): unpriced (None) only when the
    model has no price."""
    if price is None:
        return Settlement(usage, None, estimated, cut)
    usd = prices.cost(usage, price, batch=batch) if usage is not None else 0.0
    return Settlement(usage, usd, estimated, cut)


def estimated(input_tokens: int, output_tokens: int, price: Price | None, *,
              cut: bool = False) -> Settlement:
    """Our own count, when the provider reported no usage."""
    usage = Usage(prompt_tokens=input_tokens, completion_tokens=output_tokens,
                  total_tokens=input_tokens + output_tokens)
    return priced(usage, price, estimated=True, cut=cut)


def cache_hit(saved_usd: float) -> Settlement:
    return Settlement(usage=None, cost_usd=0.0, saved_usd=saved_usd)


def merged(spent: Sequence[Settlement], last: Settlement) -> Settlement:
    """One settlement for several attempts (discarded ones first): tokens and dollars
    added up; unpriced if any part is."""
    if not spent:
        return last
    parts = [*spent, last]
    usages = [p.usage for p in parts if p.usage is not None]
    usage = Usage(prompt_tokens=sum(u.prompt_tokens for u in usages),
                  completion_tokens=sum(u.completion_tokens for u in usages),
                  total_tokens=sum(u.total_tokens for u in usages),
                  cached_tokens=sum(u.cached_tokens for u in usages),
                  reasoning_tokens=sum(u.reasoning_tokens for u in usages),
                  cache_write_tokens=sum(u.cache_write_tokens for u in usages)
                  ) if usages else None
    costs = [p.cost_usd for p in parts]
    return Settlement(usage=usage, cost_usd=None if any(c is None for c in costs)
                      else sum(c or 0.0 for c in costs),
                      estimated=any(p.estimated for p in parts), cut=last.cut,
                      saved_usd=last.saved_usd)


Release = Callable[[Outcome, Settlement], Awaitable[None]]


class Releases(msgspec.Struct):
    """What a request took, and how to give each back once it is priced."""

    pending: list[tuple[str, Release]] = msgspec.field(default_factory=list)

    def push(self, what: str, release: Release) -> None:
        self.pending.append((what, release))

    async def unwind(self, outcome: Outcome, s: Settlement, request_id: str) -> None:
        """Newest first; one that fails is logged and the rest still run."""
        while self.pending:
            what, release = self.pending.pop()
            try:
                await release(outcome, s)
            except Exception:
                log.exception("%s: releasing the %s failed", request_id, what)
