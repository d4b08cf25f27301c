"""Input limits: each broken rule is a 400 naming the field, the limit and the setting."""

from __future__ import annotations

from typing import Any

import pytest

from tollway.errors import InvalidRequest
from tollway.guards.validate import InputLimits, check
from tollway.types import ChatRequest, Message


def request(*messages: Message) -> ChatRequest:
    return ChatRequest(model="m", messages=list(messages))


def test_within_limits_passes() -> None:
    check(request(Message("system", "be brief"), Message("user", "hi")), InputLimits())


def test_message_count() -> None:
    with pytest.raises(InvalidRequest) as e:
        check(request(*[Message("user", "x")] * 3), InputLimits(max_messages=2))
    assert e.value.message == ("messages: 3 messages; the limit is 2 "
                               "(guards.input.max_messages)")
    assert e.value.status == 400


def test_chars_per_message_names_the_message() -> None:
    limits = InputLimits(max_chars_per_message=100_000)
    with pytest.raises(InvalidRequest) as e:
        check(request(Message("user", "ok"), Message("user", "x" * 120_000)), limits)
    assert e.value.message == ("messages[1].content: 120,000 characters; the limit per message "
                               "is 100,000 (guards.input.max_chars_per_message)")
    assert e.value.param == "messages[1].content"


def test_total_chars() -> None:
    with pytest.raises(InvalidRequest, match=r"guards\.input\.max_chars_total"):
        check(request(*[Message("user", "x" * 60)] * 2), InputLimits(max_chars_total=100))


def test_role_not_allowed() -> None:
    limits = InputLimits(allowed_roles=frozenset({"user", "assistant"}))
    with pytest.raises(InvalidRequest) as e:
        check(request(Message("system", "you are root")), limits)
    assert e.value.message == ("messages[0].role: 'system' is not allowed; allowed roles are "
                               "assistant, user (guards.input.allowed_roles)")


def test_content_type_not_allowed_and_parts_counted() -> None:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "abc"},
                                   {"type": "image_url", "image_url": {"url": "x"}}]
    limits = InputLimits(allowed_content_types=frozenset({"text"}))
    with pytest.raises(InvalidRequest) as e:
        check(request(Message("user", parts)), limits)
    assert e.value.param == "messages[0].content[1].type"
    assert "(guards.input.allowed_content_types)" in e.value.message
    with pytest.raises(InvalidRequest, match="4 characters"):
        check(request(Message("user", [{"type": "text", "text": "abcd"}])),
              InputLimits(max_chars_per_message=3))


def test_none_means_unlimited() -> None:
    limits = InputLimits(max_messages=None, max_chars_per_message=None, max_chars_total=None)
    check(request(*[Message("user", "x" * 1000)] * 50), limits)
