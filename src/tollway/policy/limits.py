"""Inbound rate limits: which apply to a request, admitting it, and what the reply says.

Requests and tokens per minute, per key, end user, client IP (callers without a key)
and model alias, each an exact sliding window over the last minute (a log in the
store, not fixed windows: a burst at a window's edge cannot double the rate). A
request takes 1 on every request counter and its worst-case tokens (input + max
output) on every token counter, all or none, in one atomic store call; after the
call the tokens are settled to what was actually used.

Replies carry OpenAI's headers (`x-ratelimit-limit-requests`, `-remaining-`,
`-reset-`, and the `-tokens` ones) for the tightest limit of each metric, so clients
that pace themselves on OpenAI's headers pace themselves here too.
"""

from __future__ import annotations

import itertools
import math
import secrets
from dataclasses import dataclass, field
from typing import Literal

from tollway.config import RateLimit, RateLimitsConfig
from tollway.errors import RateLimited
from tollway.keys import KeyRecord
from tollway.store.base import Claim, LimitStore

Metric = Literal["requests", "tokens"]
WINDOW = 60.0  # seconds: every limit is per minute

# Entry ids are unique across a fleet sharing one store: a random prefix per process,
# then a sequence (cheaper than a random id per request).
_PREFIX = secrets.token_hex(6) + "-"
_seq = itertools.count()


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit that applies to a request."""

    scope: str  # key | user | ip | model
    name: str  # the key id, user, address or alias
    metric: Metric
    limit: int
    counter: str

    def describe(self) -> str:
        if self.scope == "key":
            return f"key {self.name}"
        if self.scope == "ip":
            return f"IP {self.name}"
        if self.scope == "model":
            return f"model '{self.name}' (all callers together)"
        return f"{self.scope} '{self.name}'"


@dataclass(slots=True)
class Shown:
    """What the x-ratelimit headers report for one metric."""

    limit: int
    remaining: int
    reset: float  # seconds


@dataclass(slots=True)
class Ticket:
    """An admitted request: what it took, and what its reply headers say."""

    entry_id: str
    limits: list[Limit]
    tokens: int  # on each token counter: the worst case, then the actual once settled
    shown: dict[str, Shown] = field(default_factory=dict)  # by metric
    local: bool = False  # taken in this process's own store (the shared one was down)


class LimitExceeded(RateLimited):
    """A 429 that carries the x-ratelimit headers. `retry_after` is None when the
    request can never fit (its worst case is above a token limit): then the SDKs are
    told not to retry."""

    def __init__(self, message: str, *, limit: Limit, retry_after: float | None,
                 rate_headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(message, retry_after=retry_after)
        self.limit = limit
        self.rate_headers = rate_headers

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [*super().headers(), *self.rate_headers]
        if self.retry_after is None:
            out.append((b"x-should-retry", b"false"))
        else:  # the OpenAI SDK prefers this to Retry-After's whole seconds
            out.append((b"retry-after-ms", str(_ms(self.retry_after)).encode()))
        return out


def _add(out: list[Limit], scope: str, name: str, counter_id: str,
         rpm: int | None, tpm: int | None) -> None:
    if rpm is not None:
        out.append(Limit(scope, name, "requests", rpm, f"rate/{scope}/{counter_id}/requests"))
    if tpm is not None:
        out.append(Limit(scope, name, "tokens", tpm, f"rate/{scope}/{counter_id}/tokens"))


def applicable(cfg: RateLimitsConfig, key: KeyRecord | None, user: str | None,
               ip: str | None, alias: str) -> list[Limit]:
    """The limits on this request, in the order a refusal names them.

    A key's own rpm/tpm win over `rate_limits.keys`, metric by metric; its counters
    follow the lineage, so a rotated key and its successor share one window (rotation
    is no way around a limit). IP limits apply only to callers without a key (pass
    ip=None for the master key)."""
    out: list[Limit] = []
    if key is not None:
        _add(out, "key", key.id, key.lineage,
             key.rpm if key.rpm is not None else cfg.keys.rpm,
             key.tpm if key.tpm is not None else cfg.keys.tpm)
    if user is not None:
        _add(out, "user", user, user, cfg.users.rpm, cfg.users.tpm)
    if ip is not None and key is None:
        _add(out, "ip", ip, ip, cfg.ips.rpm, cfg.ips.tpm)
    m: RateLimit | None = cfg.models.get(alias)
    if m is not None:
        _add(out, "model", alias, alias, m.rpm, m.tpm)
    return out


def _amount(limit: Limit, tokens: int) -> float:
    return 1.0 if limit.metric == "requests" else float(tokens)


async def _shown(store: LimitStore, limits: list[Limit], levels: list[float],
                 now: float) -> dict[str, Shown]:
    """Per metric, the limit with the least remaining. Its reset is when capacity next
    comes back (the oldest counted entry leaves): when nothing remains, the moment the
    next request fits."""
    tightest: dict[str, tuple[Limit, float]] = {}
    for lim, level in zip(limits, levels, strict=True):
        best = tightest.get(lim.metric)
        if best is None or lim.limit - level < best[0].limit - best[1]:
            tightest[lim.metric] = (lim, level)
    out: dict[str, Shown] = {}
    for metric, (lim, level) in tightest.items():
        remaining = max(lim.limit - level, 0.0)
        reset = 0.0
        if level > 0:
            at = await store.free_at(lim.counter, math.floor(remaining) + 1, lim.limit,
                                     WINDOW, now)
            reset = at - now if math.isfinite(at) else WINDOW
        out[metric] = Shown(lim.limit, math.floor(remaining), reset)
    return out


async def admit(store: LimitStore, limits: list[Limit], worst_tokens: int,
                now: float) -> Ticket:
    """Take this request's share of every limit, or raise LimitExceeded (429)."""
    ticket = Ticket(f"{_PREFIX}{next(_seq)}", limits, worst_tokens)
    if not limits:
        return ticket
    claims = [Claim(lim.counter, lim.limit, _amount(lim, worst_tokens)) for lim in limits]
    got = await store.take(ticket.entry_id, claims, WINDOW, now)
    if got.refused is None:
        ticket.shown = await _shown(store, limits, got.levels, now)
        return ticket
    raise await _refusal(store, limits, claims, got.levels, got.refused, now)


async def _refusal(store: LimitStore, limits: list[Limit], claims: list[Claim],
                   levels: list[float], refused: int, now: float) -> LimitExceeded:
    # The request fits once every counter it does not fit on has made room.
    wait = 0.0
    for c, level in zip(claims, levels, strict=True):
        if level + c.amount > c.limit:
            wait = max(wait, await store.free_at(c.counter, c.amount, c.limit, WINDOW, now)
                       - now)
    lim, claim, level = limits[refused], claims[refused], levels[refused]
    # The headers report the refused limit for its metric (it is why), the tightest
    # for the other.
    shown = await _shown(store, limits, levels, now)
    shown[lim.metric] = Shown(lim.limit, math.floor(max(lim.limit - level, 0.0)),
                              wait if math.isfinite(wait) else WINDOW)
    per_min = f"{lim.limit} {lim.metric} per minute"
    if lim.metric == "tokens" and claim.amount > lim.limit:
        msg = (f"Rate limit reached for {lim.describe()}: {per_min}, and this request "
               f"could use up to {int(claim.amount)} tokens (its input plus max_tokens), "
               "so it can never fit. Lower max_tokens or shorten the input.")
        return LimitExceeded(msg, limit=lim, retry_after=None, rate_headers=_headers(shown))
    if lim.metric == "tokens":
        per_min += (f" ({math.floor(max(lim.limit - level, 0.0))} left; this request "
                    f"could use up to {int(claim.amount)}, its input plus max_tokens)")
    msg = f"Rate limit reached for {lim.describe()}: {per_min}; try again in {duration(wait)}."
    return LimitExceeded(msg, limit=lim, retry_after=wait, rate_headers=_headers(shown))


async def settle(store: LimitStore, ticket: Ticket, actual_tokens: int) -> None:
    """Replace the worst case on the token counters with what was used (a replace,
    not an add: settling twice leaves the last amount)."""
    if actual_tokens == ticket.tokens:
        return
    token_limits = [lim for lim in ticket.limits if lim.metric == "tokens"]
    if token_limits:
        await store.adjust(ticket.entry_id,
                           [(lim.counter, float(actual_tokens)) for lim in token_limits])
        shown = ticket.shown.get("tokens")
        if shown is not None:  # headers written after the settle show the room it made
            shown.remaining = max(min(shown.remaining + ticket.tokens - actual_tokens,
                                      shown.limit), 0)
    ticket.tokens = actual_tokens


def _headers(shown: dict[str, Shown]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for metric in ("requests", "tokens"):
        s = shown.get(metric)
        if s is not None:
            m = metric.encode()
            out += [(b"x-ratelimit-limit-" + m, str(s.limit).encode()),
                    (b"x-ratelimit-remaining-" + m, str(s.remaining).encode()),
                    (b"x-ratelimit-reset-" + m, duration(s.reset).encode())]
    return out


def headers(ticket: Ticket) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers for an admitted request (none without limits)."""
    return _headers(ticket.shown)


def duration(seconds: float) -> str:
    """A duration as OpenAI writes them (Go's time.Duration): "20ms", "1.5s", "6m0s",
    "1h0m0s". Rounded up to the millisecond, so a client never comes back early."""
    ms = _ms(seconds)
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, frac = divmod(rest, 1000)
    secs = f"{s}.{frac:03d}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{h}h{m}m{secs}"
    if m:
        return f"{m}m{secs}"
    return secs


def _ms(seconds: float) -> int:
    # Up to the millisecond, ignoring float noise (3.0000000000000004s is 3000ms).
    return max(math.ceil(seconds * 1000 - 1e-6), 0)
