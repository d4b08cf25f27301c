"""Where the gateway puts Anthropic prompt-cache breakpoints."""

from __future__ import annotations

from typing import Any

from tollway.providers.anthropic import messages_body
from tollway.providers.anthropic_cache import add_breakpoints, breakpoints_in
from tollway.types import ChatRequest, Message

LONG = " ".join(f"Rule {i}: answer politely and cite the policy number." for i in range(150))


def body(*messages: Message) -> dict[str, Any]:
    return messages_body(ChatRequest(model="claude", messages=list(messages),
                                     max_tokens=100), "claude-haiku-4-5")


def turns(n: int, size: int = 10) -> list[Message]:
    out = []
    for i in range(n):
        out += [Message(role="user", content=f"question {i} " + "word " * size),
                Message(role="assistant", content=f"answer {i} " + "word " * size)]
    return [*out, Message(role="user", content="the latest question")]


def test_a_long_system_prompt_and_the_history_before_the_latest_turn_are_marked() -> None:
    b = body(Message(role="system", content=LONG), *turns(3))
    assert add_breakpoints(b) == 2
    assert b["system"] == [{"type": "text", "text": LONG,
                            "cache_control": {"type": "ephemeral"}}]
    stable, latest = b["messages"][-2:]
    assert stable["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert latest["content"][-1].get("cache_control") is None
    assert breakpoints_in(b) == 2


def test_short_prefixes_get_none() -> None:
    b = body(Message(role="system", content="Be brief."), *turns(2))
    assert add_breakpoints(b) == 0
    assert b["system"] == "Be brief."
    # A short system prompt, but a history long enough by itself.
    b = body(Message(role="system", content="Be brief."), *turns(20, 100))
    assert add_breakpoints(b) == 1
    assert isinstance(b["system"], str)
    assert b["messages"][-2]["content"][-1]["cache_control"] == {"type": "ephemeral"}


def test_a_single_message_only_marks_the_system_prompt() -> None:
    b = body(Message(role="system", content=LONG), Message(role="user", content="hi"))
    assert add_breakpoints(b) == 1
    assert b["messages"][0]["content"] == [{"type": "text", "text": "hi"}]


def test_the_callers_own_breakpoints_are_left_alone() -> None:
    system = Message(role="system", content=[{"type": "text", "text": LONG,
                                              "cache_control": {"type": "ephemeral"}}])
    b = body(system, *turns(20, 100))
    before = repr(b)
    assert add_breakpoints(b) == 0
    assert repr(b) == before and breakpoints_in(b) == 1
