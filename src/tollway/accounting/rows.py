"""A ledger row: exactly one per request (success, error, refusal, abort), and the
spend reports added up from rows. The writer that buffers rows on their way to the
store is `store/ledger_writer.py`."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence

import msgspec

# Row ids: a random prefix per process and a counter (unique across a fleet, and
# cheaper than fresh randomness per request). A request's budget hold takes its row's
# id, so a rebuild of the counters can tell which rows it has counted already. Made
# by iterators alone (no Python frame per id: one is made for every request).
new_row_id: Callable[[], str] = map(("row_" + os.urandom(6).hex() + "_").__add__,
                                    map(str, itertools.count())).__next__


def storable(text: str) -> str:
    """`text` as the ledger keeps it: PostgreSQL text cannot hold NUL, so U+FFFD stands
    in (budget counters are named the same way, so the ledger can rebuild them)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class LedgerRow(msgspec.Struct, kw_only=True):
    id: str  # unique per row (the client may reuse x-request-id)
    request_id: str
    ts: float  # when the request arrived, epoch seconds
    status: int  # the HTTP status the caller got (200 for a stream that began)
    outcome: str  # ok | error | refused | aborted | cut
    key_id: str | None = None
    key_lineage: str | None = None
    user: str | None = None
    team: str | None = None
    feature: str | None = None
    conversation: str | None = None
    model_asked: str | None = None
    model: str | None = None  # the upstream model that answered
    provider: str | None = None
    tier: str | None = None
    downgraded_from: str | None = None
    stream: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True
    estimated: bool = False  # tokens are our count (abort, cut, no usage reported)
    saved_usd: float = 0.0  # a cache hit's would-be cost
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    error: str | None = None  # the error type the caller saw
    retries: int = 0
    fallback_from: str | None = None  # the first model tried, when another answered
    cache: str | None = None  # hit | semantic-hit | miss | bypass, when the cache applies
    guards: str | None = None  # what guards did, e.g. "pii:redact:email+phone" (never text)
    # A history policy or a server-side conversation: the tokens of history sent (all
    # but the latest turn) and those that trimming or summarising kept back.
    history_tokens: int | None = None
    history_saved_tokens: int | None = None
    # Whose conversation (its budgets are counted per owner: policy/budget.py).
    conversation_owner: str | None = None
    # Which endpoint: chat (chat completions, messages) or embeddings. Set after the
    # row is made, and only for embeddings: each keyword argument costs msgspec a scan
    # of the fields, ~200 instructions on every chat request.
    kind: str = "chat"
    # The batch whose line this was (None: an interactive request). Set after the row
    # is made, like `kind`.
    batch_id: str | None = None
    # The request's OpenTelemetry trace (32 hex digits), when tracing is on: the row
    # and the access log lead to its spans. Set after the row is made, like `kind`.
    trace_id: str | None = None


class SpendRow(msgspec.Struct, kw_only=True):
    group: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    saved_usd: float


SPEND_GROUPS = ("day", "model", "upstream", "key", "user", "team", "feature", "kind", "batch")


def upstream_of(r: LedgerRow) -> str:
    """The deployment that answered, as provider/model (`(none)`: nothing upstream
    answered, e.g. a refusal)."""
    if r.provider and r.model:
        return f"{r.provider}/{r.model}"
    return r.model or "(none)"


def served_model(r: LedgerRow) -> str:
    """The dashboard's model: the upstream one that answered, else the name asked (a
    refusal's). Filed with each row in the embedded store's index, so it keeps this
    meaning; the spend report tells the two apart (`model`, `upstream`)."""
    return r.model or r.model_asked or "(none)"


# Each group's label of a row: a missing (or empty) value is `(none)` (`(no key)`).
# `model` is the name the caller asked for (an alias, a tier:NAME, a wildcard's model),
# never mixed with the upstream names: those are `upstream`.
GROUP_OF: dict[str, Callable[[LedgerRow], str]] = {
    "day": lambda r: time.strftime("%Y-%m-%d", time.gmtime(r.ts)),
    "model": lambda r: r.model_asked or "(none)",
    "upstream": upstream_of,
    "key": lambda r: r.key_lineage or "(no key)",
    "user": lambda r: r.user or "(none)",
    "team": lambda r: r.team or "(none)",
    "feature": lambda r: r.feature or "(none)",
    "kind": lambda r: r.kind,
    "batch": lambda r: r.batch_id or "(none)",
}

# A request the gateway answered with an error: the upstream's or its own (status >= 400),
# refusals (a budget, a limit, a bad request) included. Not an abort (the client went
# away: 499, its choice) nor a cut stream (answered 200, cut at its cost ceiling).
FAILED_OUTCOMES = ("error", "refused")
# Answered from the response cache; with a miss, the requests the cache was asked about
# (a bypass was not looked up).
CACHE_HITS = ("hit", "semantic-hit")
CACHE_LOOKUPS = (*CACHE_HITS, "miss")


def spend_of(rows: Iterable[LedgerRow], by: str) -> list[SpendRow]:
    """Totals of `rows` grouped by `by` (one of SPEND_GROUPS), sorted by group."""
    group_of = GROUP_OF.get(by)
    if group_of is None:
        raise ValueError(f"by: one of {', '.join(SPEND_GROUPS)}")
    totals: dict[str, SpendRow] = {}
    for r in rows:
        g = group_of(r)
        t = totals.get(g)
        if t is None:
            t = totals[g] = SpendRow(group=g, requests=0, input_tokens=0, output_tokens=0,
                                     cost_usd=0.0, saved_usd=0.0)
        t.requests += 1
        t.input_tokens += r.input_tokens
        t.output_tokens += r.output_tokens
        t.cost_usd += r.cost_usd
        t.saved_usd += r.saved_usd
    return [totals[g] for g in sorted(totals)]


# The fields that say which budget counters a row was charged to (policy/budget.py),
# besides its time: the key (its record has the key's budgets and lineage), the team,
# the end user, the feature, the conversation and its owner.
CHARGE_FIELDS = ("key_id", "team", "user", "feature", "conversation_owner", "conversation")


class Charged(msgspec.Struct, kw_only=True, frozen=True):
    """What a group of ledger rows charged: the rows of one period — `day` (since the
    start of today, UTC), `month` (since the start of the month, before today) or
    `total` (before the month) — that share the values of the fields grouped by (the
    other fields None). Dollars and tokens (input + output), as budgets count them."""

    period: str
    key_id: str | None = None
    team: str | None = None
    user: str | None = None
    feature: str | None = None
    conversation_owner: str | None = None
    # Which endpoint: chat (chat completions, messages) or embeddings. Set after the
    # row is made, and only for embeddings: each keyword argument costs msgspec a scan
    # of the fields, ~200 instructions on every chat request.
    kind: str = "chat"
    conversation: str | None = None
    usd: float = 0.0
    tokens: float = 0.0


def period_of(ts: float, day: float, month: float) -> str:
    return "day" if ts >= day else "month" if ts >= month else "total"


def charged_of(rows: Iterable[LedgerRow], by: Sequence[str], day: float, month: float,
               exclude: Collection[str] = ()) -> list[Charged]:
    """`rows` (but those whose id is in `exclude`) summed per period and per the values
    of the fields `by` (of CHARGE_FIELDS); rows that charged nothing are left out."""
    totals: dict[tuple[object, ...], list[float]] = {}
    for r in rows:
        tokens = r.input_tokens + r.output_tokens
        if (r.cost_usd == 0 and tokens == 0) or r.id in exclude:
            continue
        group = (period_of(r.ts, day, month), *(getattr(r, f) for f in by))
        t = totals.setdefault(group, [0.0, 0.0])
        t[0] += r.cost_usd
        t[1] += tokens
    return [msgspec.structs.replace(Charged(period=str(g[0]), usd=usd, tokens=tokens),
                                    **dict(zip(by, g[1:], strict=True)))
            for g, (usd, tokens) in totals.items()]
