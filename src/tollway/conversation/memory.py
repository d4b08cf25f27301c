"""Conversation memory on the request path, in three steps:

- `recall`: a request naming a server-side conversation gets its stored turns put in
  front of its own (fails closed: a turn answered without its history would be
  answered out of context);
- `shape`: the history policy (`window`, `summarise`) decides what of the history goes
  upstream, and says what it sent; a summary is written through the whole request path
  by a `Summariser` the gateway hands in, and only every few turns (summaries are
  stored by the history prefix they cover);
- `keep`: the request's turns, as sent, are stored with the reply's — before the caller
  has all of it, so its next turn finds them on any replica.

Store failures other than `recall`'s fail open: a summary is written afresh, a turn
that cannot be stored is logged (the answer is paid for; it still goes out).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tollway.accounting import tokens
from tollway.accounting.settlement import Settlement
from tollway.config import Config, ModelHistoryConfig
from tollway.conversation import history, summary, thread
from tollway.errors import BudgetExceeded, InvalidRequest, TollwayError
from tollway.policy.auth import Caller
from tollway.store.base import ConversationStore
from tollway.store.outage import Outages
from tollway.types import ChatRequest, Message

log = logging.getLogger("tollway")



@dataclass(frozen=True, slots=True)
class Summary:
    """What one call to the summary model gave: its text (None when it failed, and
    why), and what it cost."""

    text: str | None
    spent: Settlement
    error: TollwayError | None = None


# One call to the summary model through the whole request path (charged to the same
# caller and conversation, in a ledger row of its own).
Summariser = Callable[[ChatRequest], Awaitable[Summary]]


@dataclass(frozen=True, slots=True)
class HistoryOutcome:
    """What the history policy sent (reply headers, ledger)."""

    policy: str
    tokens: int  # history sent: every message before the latest turn
    saved_tokens: int  # kept back by trimming or summarising


class Memory:
    def __init__(self, config: Config, store: ConversationStore, outages: Outages,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.outages = outages
        self.clock = clock
        # Per alias, resolved once; a request's own x-tollway-history* resolves per request.
        self._rules = {alias: history.resolve(config.history, mc.history, None)
                       for alias, mc in config.models.items()}

    async def recall(self, req: ChatRequest, caller: Caller, conversation: str
                     ) -> thread.Thread:
        """The stored history in front of the request's new turns, for the conversation
        it names (`thread.id_of`: the header, or the body's `conversation`)."""
        if not self.config.conversations.enabled:
            raise InvalidRequest("Server-side conversations are turned off on this gateway "
                                 "(conversations.enabled); send the whole history instead.",
                                 param="x-tollway-conversation")
        t = thread.start(req, caller.owner, conversation)
        stored = await self.outages.closed(
            "conversations", f"The conversation store is unreachable, so conversation "
            f"'{conversation}' cannot be read right now.", self.store.load(t.owner, t.id))
        thread.assemble(req, t, stored, self.config.conversations.max_turns)
        return t

    def rule(self, alias: str, overrides: ModelHistoryConfig | None,
             ask: history.HistoryAsk | None, harder: int | None = None) -> history.HistoryRule:
        """`harder`: summarise above this many tokens (a budget nearing its limit)."""
        rule = (self._rules[alias] if ask is None
                else history.resolve(self.config.history, overrides, ask))
        return rule if harder is None else history.harder(rule, harder)

    async def shape(self, req: ChatRequest, rule: history.HistoryRule, alias: str,
                    model: str, owner: str, t: thread.Thread | None,
                    summarise: Summariser) -> HistoryOutcome | None:
        """Apply the history policy to `req.messages` and say what it sent (None: no
        policy and no stored conversation — nothing to say)."""
        if rule.policy == "none" and t is None:
            return None
        lay = history.layout(req.messages)
        costs = tokens.message_costs(lay.rest, model)
        pinned = sum(tokens.message_costs(lay.pinned, model))
        defs = 0  # function definitions count in the prompt (not as history)
        if req.tools or "functions" in req.extra:
            defs = tokens.count_request(req, model) - tokens.REPLY_PRIMING - pinned - sum(costs)
        fixed = pinned + defs
        if rule.policy == "window":
            kept = history.window(lay, costs, fixed, rule.window_tokens, tokens.REPLY_PRIMING,
                                  round(rule.window_tokens * rule.window_step))
        elif rule.policy == "summarise":
            folding = _Folding(lay, costs, fixed, model, rule, alias, owner, t)
            kept = await self._summarised(folding, summarise)
        else:
            kept = history.summarised(lay, costs, fixed, tokens.REPLY_PRIMING, 0, None, 0)
        req.messages = kept.messages
        return HistoryOutcome(rule.policy, kept.history_tokens - defs,
                              max(kept.full_tokens - kept.sent_tokens, 0))

    async def _summarised(self, f: _Folding, summarise: Summariser) -> history.Kept:
        """The history with a summary for its older turns: the stored one for the
        longest prefix, extended when the prompt has outgrown the threshold again."""
        alias = f.rule.summary_model or f.alias
        hashes = history.prefix_hashes(f.lay, f"{alias}|{f.rule.summary_max_tokens}")
        found = await self.outages.open(
            "conversations", "summaries: summarising afresh",
            self.store.summary(f.owner, [hashes[b] for b in sorted(hashes, reverse=True)]))
        covered, text = 0, None
        if found is not None:
            covered = next(b for b, h in hashes.items() if h == found[0])
            text = summary.decode(found[1]).text
        fold = history.plan_summary(f.lay, f.costs, f.fixed, tokens.REPLY_PRIMING, covered,
                                    f.cost_of(text), f.rule)
        if fold is None:
            return f.kept(covered, text)
        req = summary.request(alias, text, f.lay.rest[fold.start:fold.end],
                              f.rule.summary_max_tokens)
        got = await summarise(req)
        if f.thread is not None:  # the conversation's totals include its summaries
            f.thread.extra_tokens += got.spent.tokens
            f.thread.extra_usd += got.spent.usd
        if isinstance(got.error, BudgetExceeded):
            raise got.error  # a conversation past its cap stops here: nothing more is sent
        if got.text is None:  # no summary this turn: the window keeps it in bounds
            log.warning("summariser failed (%s); trimming to a window instead",
                        got.error.message if got.error is not None else "no text")
            return history.window(f.lay, f.costs, f.fixed, f.rule.summarise_above,
                                  tokens.REPLY_PRIMING)
        text = got.text
        await self.outages.open("conversations", "summaries: not stored", self.store.put_summary(
            f.owner, hashes[fold.end], f.thread.id if f.thread is not None else None,
            summary.encode(summary.Stored(text, fold.end)), self.clock()))
        return f.kept(fold.end, text)

    async def keep(self, t: thread.Thread, reply: dict[str, Any] | None,
                   s: Settlement) -> None:
        """Store the request's turns with the reply's assistant message."""
        turn = thread.reply_turn(reply)
        await self.outages.open("conversations", f"conversation {t.id}: this turn was not "
                                "stored", self.store.append(
            t.owner, t.id, t.system, [*t.new, *([turn] if turn is not None else [])],
            s.tokens + t.extra_tokens, s.usd + t.extra_usd, self.clock()))


@dataclass(frozen=True, slots=True)
class _Folding:
    """A history being summarised: its layout, token costs, and whose it is."""

    lay: history.Layout
    costs: list[int]
    fixed: int  # pinned messages and function definitions
    model: str
    rule: history.HistoryRule
    alias: str
    owner: str
    thread: thread.Thread | None

    def cost_of(self, text: str | None) -> int:
        if text is None:
            return 0
        return tokens.message_costs([summary.message(text)], self.model)[0]

    def kept(self, covered: int, text: str | None) -> history.Kept:
        note: Message | None = summary.message(text) if text is not None else None
        return history.summarised(self.lay, self.costs, self.fixed, tokens.REPLY_PRIMING,
                                  covered, note, self.cost_of(text))
