"""Check a model's output against the request's `response_format`.

`json_schema` output must parse and validate against the schema; `json_object` output
must parse as a JSON object. Schemas are compiled once, when the request is parsed
(`wire/schemas.py`: fastjsonschema generates a Python validator per schema;
`bench/guards.py` measures it against jsonschema's interpreter), and the validator is
reused here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fastjsonschema
import orjson

from tollway.wire.schemas import compiled, problem


@dataclass(frozen=True, slots=True)
class SchemaCheck:
    ok: bool
    error: str | None = None  # what is wrong, for a person (and for the retry prompt)


OK = SchemaCheck(True)


def wanted(response_format: dict[str, Any] | None) -> bool:
    """Whether the request asked for structured output that can be checked."""
    return response_format is not None and response_format.get("type") in (
        "json_schema", "json_object")


def check(text: str, response_format: dict[str, Any]) -> SchemaCheck:
    kind = response_format.get("type")
    if kind not in ("json_schema", "json_object"):
        return OK
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        return SchemaCheck(False, f"the output is not valid JSON: {e}")
    if kind == "json_object":
        if not isinstance(value, dict):
            return SchemaCheck(False, f"the output is JSON but not an object (it is "
                               f"{_json_type(value)})")
        return OK
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        return OK  # nothing to validate against; the JSON parsed
    try:
        validator = compiled(schema)
    except Exception as e:  # refused at parse time; a request built in Python may not be
        return SchemaCheck(False, f"the request's JSON schema is invalid: {problem(e)}")
    try:
        validator(value)
    except fastjsonschema.JsonSchemaValueException as e:
        return SchemaCheck(False, f"the output does not match the schema: {e.message}")
    return OK


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
