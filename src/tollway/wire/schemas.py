"""The JSON schemas a request carries (`response_format`, tools' parameters, Anthropic's
`input_schema` and `output_config.format`), compiled when the request is parsed.

A schema that cannot compile is a 400 before anything is held or sent, instead of an
upstream round trip (or two, with the schema guard's retry) and a 502. The validators
are kept: the output guard (`guards/schema.py`) checks answers with the same ones.

fastjsonschema turns a schema into Python source and compiles it (~1.5 µs per byte of
schema, most of it in `compile()`): cached by a digest of the canonical JSON, so an
agent resending its tools pays once; bounded per request (`MAX_SCHEMA_BYTES`), so one
request cannot hold the event loop for long. Remote `$ref`s are never fetched: the
library would open any URL a schema names (`http:`, `file:`), from the server.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import fastjsonschema
import orjson

Validator = Callable[[Any], Any]
Fail = Callable[[str, str], NoReturn]  # (parameter, problem) -> the dialect's 400

# All the schemas of one request, as canonical JSON. Far above any real tool set (a
# coding agent's ~20 tools are ~50 KB); at the limit, compiling takes ~1.5 s once.
MAX_SCHEMA_BYTES = 1024 * 1024
CACHE_SIZE = 512

_cache: OrderedDict[bytes, Validator] = OrderedDict()


class _NoRemote(Mapping[str, Callable[[str], Any]]):
    """fastjsonschema's `handlers`, by URL scheme, for `$ref`s outside the schema:
    every scheme maps to a refusal (an unknown one would go to urlopen)."""

    def __getitem__(self, scheme: str) -> Callable[[str], Any]:
        return _refuse

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _refuse(uri: str) -> Any:
    raise fastjsonschema.JsonSchemaDefinitionException(
        f"$ref {uri!r} points outside the schema; only local references (#/...) are "
        "resolved")


_NO_REMOTE = _NoRemote()


def canonical(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)


def compiled(schema: dict[str, Any], canonical_json: bytes | None = None) -> Validator:
    """The validator of `schema`, compiled once. Raises whatever compiling raised."""
    key = hashlib.blake2b(canonical_json or canonical(schema), digest_size=16).digest()
    validate = _cache.get(key)
    if validate is not None:
        _cache.move_to_end(key)
        return validate
    validate = fastjsonschema.compile(schema, handlers=_NO_REMOTE)
    _cache[key] = validate
    if len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return validate


def problem(e: Exception) -> str:
    """What a compile error says, for a person."""
    if isinstance(e, RecursionError | SyntaxError):  # nesting past what Python compiles
        return "it is nested too deeply to compile"
    text = str(getattr(e, "message", None) or e) or type(e).__name__
    return text.rstrip(".")


def check_all(schemas: list[tuple[str, dict[str, Any]]], fail: Fail) -> None:
    """Compile each (parameter, schema) of one request; the first that cannot (or the
    one past the size bound) is refused through `fail`, in the caller's dialect."""
    total = 0
    for param, schema in schemas:
        raw = canonical(schema)
        total += len(raw)
        if total > MAX_SCHEMA_BYTES:
            fail(param, f"the request's JSON schemas add up to more than "
                 f"{MAX_SCHEMA_BYTES:,} bytes")
        try:
            compiled(schema, raw)
        except Exception as e:  # an untrusted schema: any failure to compile is its own
            fail(param, f"not a valid JSON schema: {problem(e)}")
