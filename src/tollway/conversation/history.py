"""What of a conversation's history goes upstream.

A history is split into the pinned system prompt (system and developer messages, always
sent, first), the *current turn* (from the last user message to the end: the question,
and any tool calls and results answering it — always sent) and, before it, *units*:
a message together with the tool results that follow it, so a tool call and its
results are kept or dropped together, never split.

- `window` keeps the most recent units that fit in the token budget with the pinned
  messages and the current turn; the kept history starts at a user message. With a
  `step`, it drops the oldest units in steps of that many tokens counted from the
  conversation's start, not one unit at a time: the cut stays where it is until the
  window overflows again, so consecutive turns send the same prefix and the
  provider's prompt cache (OpenAI's automatic one, Anthropic's breakpoints) serves it
  at the cached rate. A one-unit slide changes the prefix every turn and defeats it.
- `summarise` stands a summary in for the oldest units. Summaries are stored by the
  hash of the history prefix they cover, so the next turn finds the last one and
  only writes a new one when the history has outgrown the threshold again: the
  summariser runs every few turns, never every turn, and sees only the previous
  summary and the turns added since.

This module plans; the gateway counts tokens (`accounting/tokens.message_costs`),
stores summaries and calls the summariser.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Final

import msgspec

from tollway.config import HistoryConfig, HistoryPolicy, ModelHistoryConfig
from tollway.errors import InvalidRequest
from tollway.types import Message

PINNED: Final = ("system", "developer")
ATTACHED: Final = ("tool", "function")  # results: they belong to the call before them
_encode = msgspec.json.Encoder(order="deterministic").encode


@dataclass(frozen=True, slots=True)
class HistoryRule:
    """The history policy one request gets (config, alias, then request headers)."""

    policy: HistoryPolicy
    window_tokens: int
    window_step: float
    summarise_above: int
    keep_recent_tokens: int
    summary_model: str | None
    summary_max_tokens: int


@dataclass(frozen=True, slots=True)
class HistoryAsk:
    """A request's own choice: `x-tollway-history` and `x-tollway-history-tokens`
    (the window's budget, or the summarising threshold)."""

    policy: HistoryPolicy | None = None
    tokens: int | None = None


def ask_of(policy: str | None, tokens: str | None) -> HistoryAsk | None:
    if policy is None and tokens is None:
        return None
    p = None
    if policy is not None:
        p = "summarise" if policy.lower() == "summarize" else policy.lower()
        if p not in ("none", "window", "summarise"):
            raise InvalidRequest(f"x-tollway-history: one of none, window, summarise; got "
                                 f"{policy!r}", param="x-tollway-history")
    n = None
    if tokens is not None:
        # isascii: a latin-1 header byte such as '²' is a digit to isdigit(), not to int().
        if not (tokens.isascii() and tokens.isdigit()) or int(tokens) < 1:
            raise InvalidRequest(f"x-tollway-history-tokens: a whole number of tokens >= 1, "
                                 f"got {tokens!r}", param="x-tollway-history-tokens")
        n = int(tokens)
    return HistoryAsk(p, n)  # type: ignore[arg-type]


def resolve(cfg: HistoryConfig, alias: ModelHistoryConfig | None,
            ask: HistoryAsk | None) -> HistoryRule:
    fields = {f: getattr(cfg, f) for f in HistoryConfig.__struct_fields__}
    if alias is not None:
        fields.update({f: v for f in ModelHistoryConfig.__struct_fields__
                       if (v := getattr(alias, f)) is not None})
    if ask is not None:
        if ask.policy is not None:
            fields["policy"] = ask.policy
        if ask.tokens is not None:
            fields["window_tokens"] = fields["summarise_above"] = ask.tokens
            fields["keep_recent_tokens"] = min(fields["keep_recent_tokens"], ask.tokens // 2)
    return HistoryRule(**fields)


def harder(rule: HistoryRule, tokens: int) -> HistoryRule:
    """The rule summarising above `tokens` when that is lower than its own threshold
    (whatever its policy): what a budget nearing its limit asks for."""
    above = min(rule.summarise_above, tokens) if rule.policy == "summarise" else tokens
    return dataclasses.replace(rule, policy="summarise", summarise_above=above,
                               keep_recent_tokens=min(rule.keep_recent_tokens, above // 2))


@dataclass(frozen=True, slots=True)
class Layout:
    """A history split for trimming. Indices are into `rest` (every message that is not
    pinned, in order)."""

    pinned: list[Message]
    rest: list[Message]
    current: int  # where the current turn starts
    starts: list[int]  # where each unit before the current turn starts, in order


def layout(messages: list[Message]) -> Layout:
    pinned = [m for m in messages if m.role in PINNED]
    rest = [m for m in messages if m.role not in PINNED]
    current = next((i for i in range(len(rest) - 1, -1, -1) if rest[i].role == "user"), None)
    if current is None:  # no user message: the last unit is the current turn
        current = len(rest) - 1
        while current > 0 and rest[current].role in ATTACHED:
            current -= 1
        current = max(current, 0)
    starts = [i for i in range(current) if i == 0 or rest[i].role not in ATTACHED]
    return Layout(pinned, rest, current, starts)


def _user_start(lay: Layout, b: int) -> int:
    """The first boundary at or after `b` where the kept history starts with a user
    message (some providers refuse a history that opens with the assistant)."""
    for s in lay.starts:
        if s >= b and lay.rest[s].role == "user":
            return s
    return lay.current


@dataclass(frozen=True, slots=True)
class Kept:
    """The messages to send and the token accounting of the choice."""

    messages: list[Message]
    sent_tokens: int  # messages' prompt tokens (framing and reply priming included)
    history_tokens: int  # all but the current turn
    full_tokens: int  # the whole history, untrimmed


def window(lay: Layout, costs: list[int], pinned_cost: int, budget: int,
           priming: int, step: int = 0) -> Kept:
    """The pinned messages and the most recent units that fit in `budget` with the
    current turn (which always goes, whatever it costs); with a `step`, cut only where
    the dropped history first reaches a multiple of `step` tokens."""
    suffix = _suffix_sums(costs)
    room = budget - pinned_cost - priming
    if step > 0:
        b = _stepped_cut(lay, suffix, room, step)
    else:
        b = lay.current
        for s in reversed(lay.starts):
            if suffix[s] > room:
                break
            b = s
        b = _user_start(lay, b)
    return _kept(lay, suffix, pinned_cost, priming, b, None, 0)


def _stepped_cut(lay: Layout, suffix: list[int], room: int, step: int) -> int:
    """The first cut, among those where the dropped tokens first reach k x `step`
    (k = 0, 1, ...), that leaves a history within `room`. The candidates depend only on
    the history's start, so the next turns find the same cut until it overflows."""
    total = suffix[0]
    threshold = 0
    while True:
        s = next((s for s in lay.starts if total - suffix[s] >= threshold), lay.current)
        b = _user_start(lay, s)
        if b >= lay.current or suffix[b] <= room:
            return b
        threshold = ((total - suffix[b]) // step + 1) * step


def _suffix_sums(costs: list[int]) -> list[int]:
    out = [0] * (len(costs) + 1)
    for i in range(len(costs) - 1, -1, -1):
        out[i] = out[i + 1] + costs[i]
    return out


def _kept(lay: Layout, suffix: list[int], pinned_cost: int, priming: int, b: int,
          summary: Message | None, summary_cost: int) -> Kept:
    head = [*lay.pinned, *([summary] if summary is not None else [])]
    sent = pinned_cost + summary_cost + suffix[b] + priming
    return Kept(messages=[*head, *lay.rest[b:]], sent_tokens=sent,
                history_tokens=sent - priming - suffix[lay.current],
                full_tokens=pinned_cost + suffix[0] + priming)


def prefix_hashes(lay: Layout, salt: str) -> dict[int, str]:
    """A hash of the history up to each unit boundary (and the current turn): what a
    stored summary is found by. `salt` carries what else the summary depends on."""
    h = hashlib.blake2b(salt.encode(), digest_size=16)
    out: dict[int, str] = {}
    bounds = {*lay.starts, lay.current}
    for i, m in enumerate(lay.rest[:lay.current + 1]):
        if i in bounds and i > 0:
            out[i] = h.hexdigest()
        h.update(_encode(m))
        h.update(b"\x1e")
    return out


@dataclass(frozen=True, slots=True)
class Fold:
    """A summary to write: the previous one (if any) plus rest[start:end]."""

    start: int
    end: int


def plan_summary(lay: Layout, costs: list[int], pinned_cost: int, priming: int,
                 covered: int, summary_cost: int, rule: HistoryRule) -> Fold | None:
    """With a summary covering rest[:covered] (cost `summary_cost`; 0 and 0 for none),
    the units to fold into a new summary — or None when the prompt is within the
    threshold, or what could be folded is less than a summary's size."""
    suffix = _suffix_sums(costs)
    if pinned_cost + summary_cost + suffix[covered] + priming <= rule.summarise_above:
        return None
    # Fold everything older than about the last `keep_recent_tokens`.
    end = lay.current
    for s in reversed(lay.starts):
        if s < covered or suffix[s] > rule.keep_recent_tokens:
            break
        end = s
    end = _user_start(lay, end) if end < lay.current else end
    # Folding fewer tokens than a summary may take saves nothing (and with a threshold
    # set below the summary's size would summarise every turn).
    if sum(costs[covered:end]) < rule.summary_max_tokens:
        return None
    return Fold(covered, end)


def summarised(lay: Layout, costs: list[int], pinned_cost: int, priming: int,
               covered: int, summary: Message | None, summary_cost: int) -> Kept:
    """The messages to send with the summary standing in for rest[:covered]."""
    return _kept(lay, _suffix_sums(costs), pinned_cost, priming, covered, summary,
                 summary_cost)
