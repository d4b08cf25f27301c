"""What makes two requests the same for the cache, and what a request may ask of it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tollway.cache.controls import ask_of
from tollway.cache.keys import keys_of
from tollway.errors import InvalidRequest
from tollway.wire.openai import parse_chat_request


def keys(body: dict[str, Any], tenant: str = "team:a", namespace: str = "",
         version: str = "1", alias: str = "sim") -> Any:
    full = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], **body}
    return keys_of(parse_chat_request(orjson.dumps(full)), alias, tenant, namespace, version)


def test_delivery_and_identity_fields_are_not_part_of_the_key() -> None:
    base = keys({})
    assert keys({"stream": True, "stream_options": {"include_usage": True}}) == base
    assert keys({"user": "someone-else"}) == base
    # A text-only parts list is the same message as the string.
    assert keys({"messages": [{"role": "user",
                               "content": [{"type": "text", "text": "hi"}]}]}) == base


@pytest.mark.parametrize("change", [
    {"temperature": 0.3}, {"top_p": 0.9}, {"max_tokens": 9}, {"seed": 1}, {"n": 2},
    {"stop": "x"}, {"presence_penalty": 0.5}, {"frequency_penalty": 0.5},
    {"response_format": {"type": "json_object"}},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi "}]},
    {"messages": [{"role": "user", "content": "hi", "name": "bob"}]},
    {"logprobs": True},  # unknown to us, forwarded upstream: part of the key too
])
def test_every_parameter_and_message_is_part_of_the_key(change: dict[str, Any]) -> None:
    assert keys(change).exact != keys({}).exact


def test_tenant_namespace_version_and_alias_are_part_of_the_key() -> None:
    base = keys({})
    for other in (keys({}, tenant="team:b"), keys({}, namespace="v2"), keys({}, version="2"),
                  keys({}, alias="other")):
        assert other.exact != base.exact and other.partition != base.partition


def test_the_partition_is_everything_but_the_latest_turn() -> None:
    a = keys({"messages": [{"role": "system", "content": "S"},
                           {"role": "user", "content": "How do I reset my password?"}]})
    b = keys({"messages": [{"role": "system", "content": "S"},
                           {"role": "user", "content": "Password reset: how?"}]})
    c = keys({"messages": [{"role": "system", "content": "T"},
                           {"role": "user", "content": "How do I reset my password?"}]})
    assert a.partition == b.partition and a.exact != b.exact
    assert c.partition != a.partition
    assert a.text == "How do I reset my password?"
    # Only a plain user turn is matched by meaning.
    assert keys({"messages": [{"role": "user", "content": "q"},
                              {"role": "assistant", "content": "a"}]}).text is None
    image = [{"type": "text", "text": "what is this"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]
    assert keys({"messages": [{"role": "user", "content": image}]}).text is None


def test_request_controls() -> None:
    assert ask_of(None, None) is None
    ask = ask_of("no-cache", None)
    assert ask is not None and (ask.read, ask.write) == (False, True)
    ask = ask_of("private, no-store", None)
    assert ask is not None and (ask.read, ask.write) == (False, False)
    ask = ask_of(None, [(b"x-tollway-cache", "force"), (b"x-tollway-cache-ttl", "90"),
                        (b"x-tollway-cache-namespace", "v2")])
    assert ask is not None and (ask.force, ask.ttl, ask.namespace) == (True, 90.0, "v2")
    for bad in ([(b"x-tollway-cache", "maybe")], [(b"x-tollway-cache-ttl", "-1")],
                [(b"x-tollway-cache-ttl", "soon")]):
        with pytest.raises(InvalidRequest, match=bad[0][0].decode()):
            ask_of(None, bad)
