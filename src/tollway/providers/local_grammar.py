"""The grammar the bundled model decodes under when a request asks for JSON: llama.cpp
samples only tokens the grammar allows, so the answer is JSON of the schema's shape by
construction (`json_schema`), or a JSON object (`json_object`).

llama-cpp-python's converter (`llama_cpp.llama_grammar`, a port of llama.cpp's
json-schema-to-grammar) handles what OpenAI's strict schemas hold — `$defs`/`$ref`,
`anyOf` (Optional is `anyOf [T, null]`), `enum`/`const`, `required`, `additionalProperties:
false`, `minItems`/`maxItems`, `minLength`/`maxLength`, `pattern`, date/time/uuid formats.
Three things it leaves out are added here, as a schema the grammar allows must also
pass the output guard (`guards/schema.py` validates against the original schema):

- `minimum`/`maximum` (pydantic's `ge`/`le`): a small integral range becomes the list
  of its values (with decimals, for numbers); a lower bound of zero or more, at least no
  minus sign;
- control characters are not allowed raw inside strings (its `char` rule lets a newline
  through, which is not JSON);
- `json_object` is its generic object, whose whitespace is one optional space (the
  stock JSON grammar allows newlines and indents, which a small model can run away in).

A schema the converter cannot turn into a grammar is decoded as a generic JSON object,
and the guard judges the result.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import Any

from llama_cpp import llama_grammar

log = logging.getLogger("tollway.providers.local")

# A bounded range with up to this many integers is listed value by value.
MAX_LISTED = 256

# JSON's string character: anything but a quote, a backslash or a control character.
_CHAR = (r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] '
         r'[0-9a-fA-F] [0-9a-fA-F])')


def grammar(response_format: dict[str, Any] | None) -> str | None:
    """The GBNF text for a request's `response_format` (None: free text)."""
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return _gbnf('{"type": "object"}')
    if kind != "json_schema":
        return None
    assert response_format is not None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        return _gbnf('{"type": "object"}')
    text = json.dumps(schema, sort_keys=False)  # property order is the answer's order
    try:
        return _gbnf(text)
    except Exception as e:  # an untrusted schema: whatever the converter trips on
        log.warning("local model: no grammar for this schema (%s); decoding any JSON "
                    "object instead", e)
        return _gbnf('{"type": "object"}')


@functools.lru_cache(maxsize=128)
def _gbnf(schema_json: str) -> str:
    converter = _Converter(prop_order={}, allow_fetch=False, dotall=False,
                           raw_pattern=False)
    schema = converter.resolve_refs(json.loads(schema_json), "stdin")
    converter.visit(schema, "")
    if converter._rules.get("char") == _primitive("char").content:
        converter._rules["char"] = _CHAR
    return str(converter.format_grammar())


# llama-cpp-python's converter has no annotations: used as Any.
_SchemaConverter: Any = llama_grammar.SchemaConverter


class _Converter(_SchemaConverter):  # type: ignore[misc]
    def visit(self, schema: dict[str, Any], name: str) -> str:
        if schema.get("type") in ("integer", "number") and not _has_other_shape(schema):
            rule = _bounded_number(schema, self)
            if rule is not None:
                return str(self._add_rule(_rule_name(name), rule))
        return str(super().visit(schema, name))


def _has_other_shape(schema: dict[str, Any]) -> bool:
    return any(k in schema for k in ("$ref", "anyOf", "oneOf", "enum", "const"))


def _rule_name(name: str) -> str:
    """As the converter names a rule: not after one of its own (`number`, `char`, …),
    which other rules refer to by name."""
    return f"{name}-" if name in llama_grammar.RESERVED_NAMES else name or "root"


def _bounded_number(schema: dict[str, Any], conv: _Converter) -> str | None:
    """A rule for a number with bounds, or None when it has none worth a rule."""
    integer = schema["type"] == "integer"
    lo, hi, exact = _bounds(schema, integer)
    if lo is not None and hi is not None and exact:
        first, last = math.ceil(lo), math.floor(hi)
        if 0 <= last - first < MAX_LISTED and (integer or lo >= 0):
            if integer:
                return f"({_listed(first, last + 1)}) space"
            # Decimals after every integer but the last: [0, 10] is 0 … 9.99…, or 10.
            conv._add_primitive("decimal-part", _primitive("decimal-part"))
            below = f'({_listed(first, last)}) ("." decimal-part)? | ' if last > first else ""
            return f'({below}"{last}") space'
    if lo is not None and lo >= 0:  # at least no minus sign
        conv._add_primitive("integral-part", _primitive("integral-part"))
        if integer:
            return "integral-part space"
        conv._add_primitive("decimal-part", _primitive("decimal-part"))
        return 'integral-part ("." decimal-part)? space'
    return None


def _listed(start: int, stop: int) -> str:
    return " | ".join(f'"{i}"' for i in range(start, stop))


def _bounds(schema: dict[str, Any], integer: bool) -> tuple[float | None, float | None, bool]:
    """(lowest, highest, whether both are inclusive): an integer's exclusive bound is
    the next integer in; a number's is kept, but not exact (the values are not listed)."""
    def num(key: str) -> float | None:
        v = schema.get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    lo, hi, exact = num("minimum"), num("maximum"), True
    xlo, xhi = num("exclusiveMinimum"), num("exclusiveMaximum")
    if xlo is not None and (lo is None or xlo >= lo):
        lo, exact = (math.floor(xlo) + 1.0, exact) if integer else (xlo, False)
    if xhi is not None and (hi is None or xhi <= hi):
        hi, exact = (math.ceil(xhi) - 1.0, exact) if integer else (xhi, False)
    return lo, hi, exact


def _primitive(name: str) -> Any:
    return llama_grammar.PRIMITIVE_RULES[name]
