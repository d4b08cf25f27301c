"""The continuity check: a latest turn the rules let stand alone is still kept to its
conversation when it is about what was just said (by MiniLM embeddings)."""

from __future__ import annotations

import numpy as np
import pytest

from tollway.cache.continuity import (
    ASSISTANT_CHARS,
    CONTINUITY_THRESHOLD,
    context_texts,
    continuity,
    leans_on_context,
)
from tollway.cache.controls import for_alias
from tollway.cache.embed import default_embedder
from tollway.config.cache import CacheConfig, ModelCacheConfig, SemanticCacheConfig
from tollway.types import Message


def msgs(*turns: tuple[str, str]) -> list[Message]:
    return [Message(role=r, content=t) for r, t in turns]


def test_the_context_is_the_last_two_user_turns_and_the_last_assistant_turn() -> None:
    earlier = msgs(("system", "You help."), ("user", "one"), ("assistant", "a1"),
                   ("user", "two"), ("assistant", "a2"), ("user", "three"),
                   ("assistant", "x" * 1000 + " Email or SMS?"))
    texts = context_texts(earlier)
    assert texts[:2] == ["three", "two"]
    assert len(texts) == 3 and len(texts[2]) == ASSISTANT_CHARS
    assert texts[2].endswith("Email or SMS?")
    assert context_texts(msgs(("system", "You help."))) == []


def test_no_context_is_no_continuity() -> None:
    v = np.ones(4, dtype=np.float32) / 2
    assert continuity(v, []) == 0.0 and not leans_on_context(v, [])


def lean(latest: str, *earlier: str) -> bool:
    vectors = default_embedder().embed([latest, *earlier])
    return leans_on_context(vectors[0], list(vectors[1:]))


@pytest.mark.parametrize(("latest", "earlier"), [
    ("How do I get a replacement?", ["My charger stopped working.", "Sorry to hear that."]),
    ("Is there a quicker option?", ["How long does standard shipping take?",
                                    "Standard shipping takes 5-7 days."]),
    ("What is the battery life like?", ["Tell me about the Pixel 8.",
                                        "The Pixel 8 is our compact Android phone."]),
])
def test_a_question_about_what_was_just_said_leans_on_it(latest: str,
                                                         earlier: list[str]) -> None:
    assert lean(latest, *earlier)


@pytest.mark.parametrize(("latest", "earlier"), [
    ("Do you have a mobile app?", ["I'd like to change the size on order 7731.",
                                   "Done: order 7731 is now size M."]),
    ("What are your opening hours?", ["Is the blue jacket waterproof?",
                                      "Yes, it has a waterproof membrane."]),
])
def test_an_faq_after_unrelated_talk_does_not(latest: str, earlier: list[str]) -> None:
    assert not lean(latest, *earlier)


def test_the_threshold_is_a_cosine() -> None:
    assert 0 < CONTINUITY_THRESHOLD < 1


def test_sharing_is_on_by_default_where_the_semantic_cache_is() -> None:
    on = CacheConfig(enabled=True, semantic=SemanticCacheConfig(enabled=True))
    assert for_alias(on, None).across
    # The check needs the model: without the semantic cache nothing is shared.
    assert not for_alias(CacheConfig(enabled=True), None).across
    assert not for_alias(on, ModelCacheConfig(across_conversations=False)).across
    assert not for_alias(on, ModelCacheConfig(semantic=False)).across
