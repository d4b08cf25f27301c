"""How the bundled model is held to JSON: the grammar a response_format decodes under
(`providers/local_grammar.py`) and the nudge that closes runaway values
(`providers/local_closing.py`). The model itself: tests/integration/test_local_structured.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tollway.providers import local_closing, local_grammar


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "strict": True,
                                                   "schema": schema}}


def rules(gbnf: str | None) -> dict[str, str]:
    assert gbnf is not None
    return dict(line.split(" ::= ", 1) for line in gbnf.splitlines())


def test_text_is_free_and_json_object_is_any_object() -> None:
    assert local_grammar.grammar(None) is None
    assert local_grammar.grammar({"type": "text"}) is None
    got = rules(local_grammar.grammar({"type": "json_object"}))
    assert got["root"] == "object" and got["space"] == '" "?'  # no runaway newlines


def test_a_strict_schema_with_refs_enums_and_optionals_is_its_own_grammar() -> None:
    schema = {
        "type": "object", "additionalProperties": False,
        "required": ["name", "home", "colour", "nick"],
        "properties": {"name": {"type": "string"}, "home": {"$ref": "#/$defs/Home"},
                       "colour": {"enum": ["red", "blue"]},
                       "nick": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
        "$defs": {"Home": {"type": "object", "additionalProperties": False,
                           "required": ["city"], "properties": {"city": {"type": "string"}}}},
    }
    got = rules(local_grammar.grammar(schema_format(schema)))
    assert got["root"].startswith('"{" space name-kv "," space home-kv')
    assert got["Home"] == '"{" space Home-city-kv "}" space'
    assert got["colour"] == '"\\"red\\"" | "\\"blue\\""'
    assert got["nick"] == "string | null"
    # JSON strings hold no raw control characters (the converter's own rule lets them in).
    assert got["char"].startswith(r'[^"\\\x7F\x00-\x1F]')


@pytest.mark.parametrize(("bounds", "rule"), [
    ({"type": "integer", "minimum": 1, "maximum": 3}, '("1" | "2" | "3") space'),
    ({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}, '("1" | "2") space'),
    ({"type": "integer", "minimum": -1, "maximum": 1}, '("-1" | "0" | "1") space'),
    ({"type": "number", "minimum": 0, "maximum": 2},
     '(("0" | "1") ("." decimal-part)? | "2") space'),
    ({"type": "integer", "minimum": 0}, "integral-part space"),
    ({"type": "number", "minimum": 0, "exclusiveMaximum": 1},
     'integral-part ("." decimal-part)? space'),
    ({"type": "integer", "minimum": 0, "maximum": 10_000}, "integral-part space"),
])
def test_numeric_bounds_are_kept_by_the_grammar(bounds: dict[str, Any], rule: str) -> None:
    schema = {"type": "object", "required": ["n"], "properties": {"n": bounds}}
    assert rules(local_grammar.grammar(schema_format(schema)))["n"] == rule


def test_a_property_named_like_a_builtin_rule_does_not_replace_it() -> None:
    schema = {"type": "object", "required": ["char", "s"], "properties": {
        "char": {"type": "integer", "minimum": 0}, "s": {"type": "string"}}}
    got = rules(local_grammar.grammar(schema_format(schema)))
    assert got["char-"] == "integral-part space"
    assert got["char"].startswith(r'[^"\\\x7F\x00-\x1F]')  # the string's characters


def test_unbounded_or_negative_numbers_keep_the_converters_rule() -> None:
    schema = {"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "number"}, "b": {"type": "number", "maximum": -1}}}
    got = rules(local_grammar.grammar(schema_format(schema)))
    assert got["a-kv"].endswith("number") and got["b-kv"].endswith("number")


def test_a_schema_the_converter_cannot_take_decodes_as_any_object() -> None:
    broken = {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}
    assert rules(local_grammar.grammar(schema_format(broken)))["root"] == "object"


class FakeModel:
    """A vocabulary of a few JSON pieces (llama-cpp-python's `detokenize`, `n_vocab`)."""

    PIECES = [b"[", b'"', b"ab", b'",', b'"]', b",", b" ]", b"{", b" }", b"},", b"}]", b"1"]

    def n_vocab(self) -> int:
        return len(self.PIECES)

    def detokenize(self, ids: list[int]) -> bytes:
        return b"".join(self.PIECES[i] for i in ids)


def ids(*pieces: bytes) -> list[int]:
    return [FakeModel.PIECES.index(p) for p in pieces]


def nudges(generated: list[bytes]) -> dict[bytes, float]:
    """The bias on each piece after `generated` (one processor, called per token)."""
    found = local_closing.closers(FakeModel())
    nudge = local_closing.CloseLongValues(found)
    context = ids(b"ab")  # the prompt
    for i in range(len(generated) + 1):
        sofar = np.array(context + ids(*generated[:i]), dtype=np.intc)
        scores = nudge(sofar, np.zeros(len(FakeModel.PIECES), dtype=np.single))
    return {p: float(s) for p, s in zip(FakeModel.PIECES, scores, strict=True) if s}


def test_short_values_are_left_alone() -> None:
    assert nudges([b"[", b'"', b"ab", b'",', b'"', b"ab"]) == {}
    assert nudges([b"[", b"1", b",", b"1"]) == {}


def test_a_long_list_is_nudged_to_end_after_its_latest_item() -> None:
    # Third item in: end the list rather than go on, a little more with each item.
    third = nudges([b"[", b"1", b",", b"1", b",", b"1"])
    fourth = nudges([b"[", b"1", b",", b"1", b",", b"1", b",", b"1"])
    assert third[b" ]"] == local_closing.PER_ITEM and third[b","] == -local_closing.PER_ITEM
    assert fourth[b" ]"] == 2 * local_closing.PER_ITEM
    # In a list of strings the item and the list end in one token: `"]` rather than `",`.
    strings = nudges([b"[", b'"', b"ab", b'",', b'"', b"ab", b'",', b'"', b"ab"])
    assert strings[b'"]'] > 0 > strings[b'",']
    # In a list of objects: `}]` rather than `},` (and ` }` then ` ]` stays possible).
    objects = nudges([b"[", b"{", b" }", b",", b"{", b" }", b",", b"{"])
    assert objects[b"}]"] > 0 > objects[b"},"] and b" }" not in objects


def test_a_long_string_is_nudged_to_close() -> None:
    got = nudges([b'"'] + [b"ab"] * 20)  # 40 bytes
    assert got[b'"'] == got[b'",'] == got[b'"]'] == 8 * local_closing.PER_BYTE
