"""Captured traffic: which conversation a request's turn belongs to, what a written
line holds, and the per-turn lines read back as conversations."""

from __future__ import annotations

import msgspec
import pytest

from tollway.config import CaptureConfig
from tollway.gateway.capture import Capture, Captured, line_of
from tollway.policy.auth import Caller
from tollway.types import ChatRequest, Message
from tollway.wire import trace

ALICE = Caller(user="alice", feature="support")


def request(*turns: str, system: str | None = "Be brief.") -> ChatRequest:
    """Turns alternate user / assistant, ending with a user turn."""
    msgs = [Message("system", system)] if system else []
    msgs += [Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    return ChatRequest(model="gpt-4o", messages=msgs)


def capture(**kw: object) -> Capture:
    return Capture(CaptureConfig(path="unused.jsonl", **kw))  # type: ignore[arg-type]


def test_a_resent_history_joins_its_conversation() -> None:
    c = capture()
    t1 = c.begin(request("Hi"), ALICE, None)
    t2 = c.begin(request("Hi", "Hello!", "Where is my order?"), ALICE, None)
    # The assistant turn is not part of the key: resent reformatted, it still joins.
    t3 = c.begin(request("Hi", "hello", "Where is my order?", "It ships", "Thanks"),
                 ALICE, None)
    assert t1 and t2 and t3
    assert t1.conversation == t2.conversation == t3.conversation
    assert [t1.n, t2.n, t3.n] == [0, 1, 2]
    assert t3.text == "Thanks" and t3.system == "Be brief."
    assert t3.user is not None and "alice" not in t3.user and t3.feature == "support"


def test_first_turns_start_conversations_of_their_own() -> None:
    c = capture()
    a = c.begin(request("Hi"), ALICE, None)
    b = c.begin(request("Hi"), ALICE, None)
    assert a and b and a.conversation != b.conversation
    # Another user's second turn on the same words is not alice's conversation.
    bob = c.begin(request("Hi", "Hello!", "More"), Caller(user="bob"), None)
    alice = c.begin(request("Hi", "Hello!", "More"), ALICE, None)
    assert bob and alice and bob.conversation != alice.conversation
    assert alice.conversation == b.conversation  # the latest "Hi" of alice's


def test_an_unseen_history_names_a_conversation_its_next_turns_join() -> None:
    c = capture()  # e.g. a restarted replica: turn 2 is the first it sees
    t2 = c.begin(request("Hi", "Hello!", "Two"), ALICE, None)
    t3 = c.begin(request("Hi", "Hello!", "Two", "ok", "Three"), ALICE, None)
    assert t2 and t3 and t2.conversation == t3.conversation and t3.n == 2


def test_the_conversation_header_groups_and_is_hashed() -> None:
    c = capture()
    a = c.begin(request("Hi"), ALICE, "order-42")
    b = c.begin(request("Something else"), ALICE, "order-42")
    assert a and b and a.conversation == b.conversation and "order-42" not in a.conversation


def test_only_requests_ending_with_a_user_turn() -> None:
    c = capture()
    tool = ChatRequest(model="m", messages=[Message("user", "x"),
                                            Message("tool", "42", tool_call_id="t")])
    assert c.begin(tool, ALICE, None) is None


def test_sampling_keeps_whole_conversations() -> None:
    c = capture(sample=0.5)
    kept = 0
    for i in range(200):
        first = c.begin(request(f"q{i}"), ALICE, None)
        second = c.begin(request(f"q{i}", "a", "follow-up"), ALICE, None)
        assert (first is None) == (second is None)
        kept += first is not None
    assert 60 < kept < 140


def test_a_line_is_redacted_and_labelled() -> None:
    t = Captured("c-1", 1, "Mail me at jane.doe@example.com please", "Agent for jane@x.io",
                 "u-1", "support")
    line = line_of(t, redact=True)
    assert "@" not in line.turn.text and "[EMAIL_1]" in line.turn.text
    assert line.system is not None and "@" not in line.system
    assert (line.turn.kind, line.turn.needs, line.turn.abort_after) == (
        "captured", "unknown", None)
    assert line.turn.meaning == line_of(t, redact=True).turn.meaning
    assert line_of(t, redact=False).turn.text == t.text


def test_an_aborted_stream_counts_its_chunks() -> None:
    t = Captured("c-1", 0, "hi", None, None, None, abort_after=1,
                 received=[b'data: {"a":1}\n\ndata: {"a":2}\n\n', b'data: {"a":3}\n\n'])
    assert line_of(t, redact=True).turn.abort_after == 3


def turn_line(cid: str, n: int, text: str) -> bytes:
    return msgspec.json.encode(trace.TurnLine(cid, n, trace.Turn("captured", text, text),
                                              user="u"))


def test_read_groups_turn_lines_in_order_beside_whole_conversations() -> None:
    whole = msgspec.json.encode(trace.Conversation("w", [trace.Turn("faq", "q", "q")],
                                                   system="s"))
    data = b"\n".join([turn_line("a", 0, "a0"), whole, turn_line("b", 0, "b0"),
                       turn_line("a", 2, "a2"), turn_line("a", 1, "a1"), b""])
    convs = trace.read(data)
    assert [c.id for c in convs] == ["a", "w", "b"]
    assert [t.text for t in convs[0].turns] == ["a0", "a1", "a2"]
    assert convs[0].user == "u" and convs[1].system == "s"
    assert [t.text for t in convs[2].turns] == ["b0"]


def test_read_names_a_bad_line() -> None:
    with pytest.raises(ValueError, match="trace line 2"):
        trace.read(turn_line("a", 0, "x") + b'\n{"id": "b"}\n')
