"""The simulator's reply text: deterministic, and exactly as many tokens as asked."""

from __future__ import annotations

import pytest

from tollway.accounting.tokens import count_text, encoding
from tollway.simulate.text import VOCABULARY, reply_pieces, reply_text, token_pieces

ENCODINGS = ["o200k_base", "cl100k_base"]


@pytest.mark.parametrize("name", ENCODINGS)
def test_every_vocabulary_piece_is_one_token(name: str) -> None:
    enc = encoding(name)
    bad = [w for w in VOCABULARY if len(enc.encode_ordinary(w)) != 1]
    assert bad == []


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4"])  # o200k_base, cl100k_base
def test_token_count_is_exact(model: str) -> None:
    for n in [*range(1, 60), 100, 257, 1000, 5000]:
        for key in ("", "hello", f"prompt {n}", "ünïcödé ☃"):
            assert count_text(reply_text(key, n), model) == n, (key, n)


def test_longer_than_the_corpus_still_exact() -> None:
    # The corpus is ~20k tokens; replies past its end wrap around.
    assert count_text(reply_text("wrap", 50_000)) == 50_000


def test_pieces_are_tokens_and_join_to_the_text() -> None:
    pieces = reply_pieces("stream me", 40, 1)
    assert len(pieces) == 40
    assert "".join(pieces) == reply_text("stream me", 40, 1)
    assert all(count_text(p) == 1 for p in pieces)
    assert not pieces[0].startswith(" ")


def test_deterministic_and_prefix_stable() -> None:
    assert reply_text("same", 30) == reply_text("same", 30)
    # A shorter reply is a prefix of a longer one, like a model cut off by max_tokens.
    assert reply_text("same", 50).startswith(reply_text("same", 30))


def test_prompt_and_choice_change_the_reply() -> None:
    assert reply_text("a", 20) != reply_text("b", 20)
    assert reply_text("a", 20, 0) != reply_text("a", 20, 1)


def test_reads_like_sentences() -> None:
    text = reply_text("shape", 200)
    assert text[0].isupper()
    assert ". " in text
    for sentence in text.split(". ")[1:]:
        assert sentence[0].isupper()


def test_zero_tokens_is_empty() -> None:
    assert reply_text("x", 0) == ""
    assert reply_pieces("x", 0) == ()


def test_token_pieces_split_any_text() -> None:
    text = '{"reply": "naïve café ☃ 你好"}'
    pieces, weights = token_pieces(text)
    assert "".join(pieces) == text
    assert sum(weights) == count_text(text)
