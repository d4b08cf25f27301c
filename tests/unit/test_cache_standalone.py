"""Whether the latest user turn stands alone (its answer may be shared across
conversations), and the context-free keys such a turn is looked up under."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tollway.cache.keys import context_free_keys, keys_of
from tollway.cache.standalone import depends_reason, stands_alone
from tollway.types import Message
from tollway.wire.openai import parse_chat_request

SYSTEM = Message(role="system", content="You are Acme's support assistant.")
TALK = [SYSTEM, Message(role="user", content="Hi there!"),
        Message(role="assistant", content="Hello! Welcome to Acme.")]


@pytest.mark.parametrize("text", [
    "How do I reset my password?",
    "What are your opening hours?",
    "Which payment methods do you accept?",
    "Is it possible to pay with PayPal?",
    "How long does it take to get a refund?",
    "Is there a student discount?",
    "Do you ship internationally?",
    "What is the difference between the basic and premium plans?",
])
def test_a_self_contained_question_stands_alone(text: str) -> None:
    assert depends_reason(text, TALK) is None


@pytest.mark.parametrize(("text", "reason"), [
    ("why?", "fragment"), ("more", "continuation"), ("the second one", "reference"),
    ("Tell me more.", "continuation"), ("and how do I change it?", "continuation"),
    ("What about Canada?", "continuation"), ("And for business accounts?", "continuation"),
    ("Same for my other account?", "continuation"), ("For business accounts?", "continuation"),
    ("Yes please do that", "continuation"),
    ("How do I change it?", "reference"), ("Is that free?", "reference"),
    ("Do they ship internationally?", "reference"), ("What does she need to sign?", "reference"),
    ("Which one is cheaper?", "reference"), ("Can you explain step 2?", "reference"),
    ("Can you explain the second step?", "reference"),
    ("Where do I click in the link you sent?", "reference"),
    ("Does this work on mobile?", "reference"), ("How do I get there from the station?",
                                                 "reference"),
    ("Can you say that again?", "reference"), ("Could you give me more details?", "reference"),
])
def test_a_turn_that_points_back_depends(text: str, reason: str) -> None:
    assert depends_reason(text, TALK) == reason


def test_an_answer_to_the_assistants_question_depends() -> None:
    asked = [SYSTEM, Message(role="user", content="I want to upgrade."),
             Message(role="assistant", content="Sure. Which plan would you like?")]
    assert depends_reason("Premium plan with yearly billing", asked) == "answer"
    # A question of its own after one is a new question.
    assert stands_alone("How do I reset my password?", asked)


def test_a_question_about_the_users_own_situation_depends() -> None:
    told = [SYSTEM, Message(role="user", content="My order number is 44120."),
            Message(role="assistant", content="Thanks.")]
    assert depends_reason("Can I get a refund?", told) == "situation"
    assert depends_reason("Where is my order?", told) == "situation"
    # The same turn after unrelated talk, or as a first turn, does not.
    assert stands_alone("Where is my order?", TALK)
    assert stands_alone("Can I get a refund?", [SYSTEM])


def request(*messages: dict[str, Any], **params: Any) -> Any:
    return parse_chat_request(orjson.dumps({"model": "sim", "messages": list(messages),
                                            **params}))


SYS = {"role": "system", "content": "You are Acme's support assistant."}
FAQ = {"role": "user", "content": "How do I reset my password?"}
HELLO = [{"role": "user", "content": "Hi there!"},
         {"role": "assistant", "content": "Hello! Welcome to Acme."}]


def test_a_stand_alone_turn_has_the_keys_of_a_first_turn() -> None:
    first = keys_of(request(SYS, FAQ), "sim", "team:a", "", "1")
    later = request(SYS, *HELLO, FAQ)
    assert context_free_keys(later, "sim", "team:a", "", "1") == first
    assert keys_of(later, "sim", "team:a", "", "1") != first
    # A first turn has no other keys; the parameters and the tenant stay in them.
    assert context_free_keys(request(SYS, FAQ), "sim", "team:a", "", "1") is None
    assert context_free_keys(later, "sim", "team:b", "", "1") != first
    assert context_free_keys(request(SYS, *HELLO, FAQ, temperature=0.2), "sim", "team:a", "",
                             "1") != first


@pytest.mark.parametrize("messages", [
    [SYS, *HELLO, {"role": "user", "content": "and how do I change it?"}],
    [SYS, *HELLO, {"role": "system", "content": "The user is on the premium plan."}, FAQ],
    [SYS, {"role": "user", "content": "Look it up"},
     {"role": "assistant", "content": None, "tool_calls": [
         {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
     {"role": "tool", "tool_call_id": "c1", "content": "premium"}, FAQ],
    [SYS, *HELLO, {"role": "user", "content": "How do I reset my password?", "name": "bob"}],
])
def test_no_context_free_keys_when_the_context_may_matter(messages: list[Any]) -> None:
    assert context_free_keys(request(*messages), "sim", "team:a", "", "1") is None
