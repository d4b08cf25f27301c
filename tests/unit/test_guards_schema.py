"""Structured output checks: parse errors, type errors, missing fields, non-objects."""

from __future__ import annotations

from typing import Any

from tollway.guards import schema

PERSON: dict[str, Any] = {"type": "json_schema", "json_schema": {"name": "person", "schema": {
    "type": "object", "required": ["name", "age"], "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}}}


def test_valid_output_passes() -> None:
    assert schema.check('{"name": "Ada", "age": 36}', PERSON) == schema.SchemaCheck(True)


def test_type_error_names_the_field() -> None:
    r = schema.check('{"name": "Ada", "age": "36"}', PERSON)
    assert not r.ok and r.error is not None and "age" in r.error and "integer" in r.error


def test_missing_required_field() -> None:
    r = schema.check('{"name": "Ada"}', PERSON)
    assert not r.ok and r.error is not None and "age" in r.error


def test_extra_field_rejected_when_schema_forbids_it() -> None:
    assert not schema.check('{"name": "Ada", "age": 1, "x": 2}', PERSON).ok


def test_not_json() -> None:
    r = schema.check("Sure! Here is the JSON: {name: Ada}", PERSON)
    assert not r.ok and r.error is not None and r.error.startswith("the output is not valid JSON")


def test_json_object_mode() -> None:
    mode = {"type": "json_object"}
    assert schema.check('{"a": 1}', mode).ok
    r = schema.check("[1, 2]", mode)
    assert not r.ok and r.error == "the output is JSON but not an object (it is an array)"


def test_invalid_schema_is_reported_not_raised() -> None:
    bad = {"type": "json_schema", "json_schema": {"schema": {"type": "no-such-type"}}}
    r = schema.check("{}", bad)
    assert not r.ok and r.error is not None and "schema is invalid" in r.error


def test_text_format_is_not_checked() -> None:
    assert schema.check("plain words", {"type": "text"}).ok
    assert not schema.wanted({"type": "text"}) and schema.wanted(PERSON)
