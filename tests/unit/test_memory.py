"""Conversation memory on the request path: `recall` a stored conversation, `shape` the
history (window, summarise), `keep` the new turns — on the embedded store's SQLite
conversations in a temporary folder, or a conversation store that is down."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
import pytest

from tests.unit.fakes import Down, body, outages, request, usage
from tollway.accounting import tokens
from tollway.accounting.settlement import Settlement
from tollway.config import parse
from tollway.conversation import summary, thread
from tollway.conversation.memory import Memory, Summary
from tollway.conversation.thread import Thread
from tollway.errors import BudgetExceeded, InvalidRequest, TollwayError, Unavailable
from tollway.policy.auth import Caller
from tollway.store.base import ConversationStore
from tollway.store.embedded import EmbeddedStore
from tollway.types import ChatRequest, Message, Role

NOW = 1_800_000_000.0
MODEL = "x-model"
CALLER = Caller(user="alice")
SPENT = Settlement(usage(400, 50), 0.02)  # what one summary cost
# Ten turns of 34 tokens each (turn 0 the user's, turn 1 the assistant's, ...).
TURNS = [f"turn {i}: " + "lorem ipsum dolor sit amet " * 5 for i in range(10)]
SUMMARISE = {"policy": "summarise", "summarise_above": 200, "keep_recent_tokens": 80,
             "summary_max_tokens": 50}


def encoded(role: Role, content: str) -> bytes:
    return msgspec.json.encode(Message(role=role, content=content))


def conversation(*texts: str) -> ChatRequest:
    """A system prompt, then the turns."""
    req = request(*texts)
    req.messages.insert(0, Message(role="system", content="Be brief."))
    return req


def texts(req: ChatRequest) -> list[str]:
    return [m.text() for m in req.messages]


class Summariser:
    """Writes the summary it was given (None: fails with `error`), at `SPENT`."""

    def __init__(self, text: str | None = None, error: TollwayError | None = None) -> None:
        self.text, self.error = text, error
        self.asked: list[ChatRequest] = []

    async def __call__(self, req: ChatRequest) -> Summary:
        self.asked.append(req)
        return Summary(self.text, SPENT, self.error)


@pytest.fixture
async def conversations(tmp_path: Any) -> AsyncIterator[ConversationStore]:
    store = EmbeddedStore(str(tmp_path))
    try:
        yield store.conversations
    finally:
        await store.close()


def memory(store: ConversationStore, **sections: Any) -> tuple[Memory, list[str]]:
    cfg = parse({"models": {"m": {"deployments": [{"provider": "local", "model": MODEL}]}},
                 **sections}, env={})
    o, failed = outages()
    return Memory(cfg, store, o, lambda: NOW), failed


async def shape(mem: Memory, req: ChatRequest, summarise: Summariser,
                t: Thread | None = None) -> Any:
    return await mem.shape(req, mem.rule("m", None, None), "m", MODEL, CALLER.owner, t,
                           summarise)


# recall

async def test_a_request_naming_no_conversation_recalls_nothing(
        conversations: ConversationStore) -> None:
    req = request("hi")
    assert thread.id_of(req, None) is None  # the pipeline then recalls nothing
    assert texts(req) == ["hi"]


async def test_the_stored_turns_go_in_front_of_the_new_ones(
        conversations: ConversationStore) -> None:
    system = msgspec.json.encode([Message(role="system", content="Be brief.")])
    await conversations.append(CALLER.owner, "c1", system,
                               [encoded("user", "first"), encoded("assistant", "one")],
                               10, 0.0, NOW)
    mem, _ = memory(conversations)
    req = request("second")
    t = await mem.recall(req, CALLER, "c1")
    assert t is not None and (t.owner, t.id, t.stored) == (CALLER.owner, "c1", 2)
    assert texts(req) == ["Be brief.", "first", "one", "second"]
    assert t.new == [encoded("user", "second")] and t.system is None


async def test_the_bodys_conversation_field_is_consumed_never_forwarded(
        conversations: ConversationStore) -> None:
    mem, _ = memory(conversations)
    req = request("hi", extra={"conversation": "from-body", "seed_me": 1})
    t = await mem.recall(req, CALLER, thread.id_of(req, None) or "")
    assert t.id == "from-body"
    assert req.extra == {"seed_me": 1}
    both = request("hi", extra={"conversation": "from-body"})
    t = await mem.recall(both, CALLER, thread.id_of(both, "from-header") or "")
    assert t.id == "from-header" and both.extra == {}  # the header wins


@pytest.mark.parametrize(("header", "extra"), [("c1", {}), (None, {"conversation": "c1"})])
async def test_conversations_turned_off_refuse_with_400_naming_the_header(
        conversations: ConversationStore, header: str | None, extra: dict[str, Any]) -> None:
    mem, _ = memory(conversations, conversations={"enabled": False})
    req = request("hi", extra=extra)
    with pytest.raises(InvalidRequest) as got:
        await mem.recall(req, CALLER, thread.id_of(req, header) or "")
    assert got.value.status == 400 and got.value.param == "x-tollway-conversation"
    assert "conversations.enabled" in got.value.message


async def test_recall_with_the_store_down_is_a_503() -> None:
    mem, failed = memory(cast(ConversationStore, Down()))
    with pytest.raises(Unavailable) as got:
        await mem.recall(request("hi"), CALLER, "c1")
    assert got.value.status == 503 and "'c1'" in got.value.message
    assert failed == ["conversations"]


# shape

async def test_no_policy_and_no_conversation_says_nothing(
        conversations: ConversationStore) -> None:
    mem, _ = memory(conversations)
    req = conversation(*TURNS, "what next?")
    assert await shape(mem, req, Summariser()) is None
    assert len(req.messages) == 12


async def test_window_keeps_the_recent_turns_that_fit_and_says_what_it_saved(
        conversations: ConversationStore) -> None:
    mem, _ = memory(conversations, history={"policy": "window", "window_tokens": 120})
    req = conversation(*TURNS, "what next?")
    costs = tokens.message_costs(req.messages, MODEL)  # the system prompt's first
    got = await shape(mem, req, Summariser())
    # Turn 7 (the assistant's) would fit, but a kept history starts with the user.
    assert texts(req) == ["Be brief.", TURNS[8], TURNS[9], "what next?"]
    assert got.policy == "window"
    assert got.tokens == costs[0] + sum(costs[9:11])  # system prompt, turns 8 and 9
    assert got.saved_tokens == sum(costs[1:9])  # turns 0 to 7


async def test_summarise_folds_the_older_turns_once_past_the_threshold(
        conversations: ConversationStore) -> None:
    mem, _ = memory(conversations, history=SUMMARISE)
    t = Thread(CALLER.owner, "c1", None, [], extra_tokens=5, extra_usd=0.001)
    summarise = Summariser("They talked about lorem ipsum.")
    req = conversation(*TURNS, "what next?")
    got = await shape(mem, req, summarise, t)

    (asked,) = summarise.asked
    assert asked.model == "m" and asked.max_tokens == 50
    folded = asked.messages[-1].text()
    assert "turn 0:" in folded and "turn 7:" in folded and "turn 8:" not in folded
    assert texts(req) == ["Be brief.", summary.HEADER + "They talked about lorem ipsum.",
                          TURNS[8], TURNS[9], "what next?"]
    assert got.policy == "summarise" and got.saved_tokens > 0
    # What the summary cost counts in the conversation's totals.
    assert t.extra_tokens == 5 + SPENT.tokens and t.extra_usd == pytest.approx(0.021)


async def test_a_later_turn_reuses_the_stored_summary_without_summarising(
        conversations: ConversationStore) -> None:
    mem, _ = memory(conversations, history=SUMMARISE)
    await shape(mem, conversation(*TURNS, "what next?"), Summariser("Lorem ipsum, so far."))

    later = conversation(*TURNS, "what next?", "More lorem.", "and then?")
    summarise = Summariser("never written")
    await shape(mem, later, summarise)
    assert summarise.asked == []
    assert texts(later)[:3] == ["Be brief.", summary.HEADER + "Lorem ipsum, so far.",
                                TURNS[8]]


async def test_a_failed_summary_trims_to_a_window_instead(
        conversations: ConversationStore, caplog: pytest.LogCaptureFixture) -> None:
    mem, _ = memory(conversations, history=SUMMARISE)
    t = Thread(CALLER.owner, "c1", None, [])
    req = conversation(*TURNS, "what next?")
    with caplog.at_level(logging.WARNING, logger="tollway"):
        got = await shape(mem, req, Summariser(error=TollwayError("summary model down")), t)
    # The window's budget is the summarising threshold: turns 6 on (a user turn) fit.
    assert texts(req) == ["Be brief.", *TURNS[6:], "what next?"]
    assert got.saved_tokens > 0 and t.extra_tokens == SPENT.tokens  # it was still paid for
    assert "summary model down" in caplog.text

    again = Summariser("now it works")  # nothing was stored: the next turn summarises
    await shape(mem, conversation(*TURNS, "what next?"), again)
    assert len(again.asked) == 1


async def test_with_the_store_down_a_summary_is_written_afresh_and_sent() -> None:
    mem, failed = memory(cast(ConversationStore, Down()), history=SUMMARISE)
    summarise = Summariser("Lorem ipsum, so far.")
    req = conversation(*TURNS, "what next?")
    await shape(mem, req, summarise)
    assert len(summarise.asked) == 1
    assert texts(req)[1] == summary.HEADER + "Lorem ipsum, so far."
    assert failed == ["conversations", "conversations"]  # not found, then not stored


async def test_a_conversation_past_its_cap_stops_at_the_summary(
        conversations: ConversationStore) -> None:
    mem, _ = memory(conversations, history=SUMMARISE)
    t = Thread(CALLER.owner, "c1", None, [])
    cap = BudgetExceeded("Conversation 'c1' has reached its cap")
    with pytest.raises(BudgetExceeded) as got:
        await shape(mem, conversation(*TURNS, "what next?"), Summariser(error=cap), t)
    assert got.value is cap and t.extra_tokens == SPENT.tokens


# keep

async def test_keep_stores_the_new_turns_with_the_reply_and_what_they_cost(
        conversations: ConversationStore) -> None:
    mem, _ = memory(conversations)
    t = await mem.recall(request("question"), CALLER, "c1")
    assert t is not None
    t.extra_tokens, t.extra_usd = 100, 0.01  # a summary made on its behalf
    await mem.keep(t, body("the answer"), Settlement(usage(30, 10), 0.004))
    stored = await conversations.load(CALLER.owner, "c1")
    assert stored is not None
    assert stored.turns == [encoded("user", "question"), encoded("assistant", "the answer")]
    assert stored.info.tokens == 140 and stored.info.cost_usd == pytest.approx(0.014)


async def test_keep_with_the_store_down_does_not_fail_the_answer() -> None:
    mem, failed = memory(cast(ConversationStore, Down()))
    t = Thread(CALLER.owner, "c1", None, [encoded("user", "question")])
    await mem.keep(t, body("the answer"), Settlement(usage(30, 10), 0.004))
    assert failed == ["conversations"]
