"""Type and range checks for one parameter of an OpenAI-shaped request, failing with
OpenAI's own wording (`Invalid type for 'tools[0].function.name': expected a string,
but got an integer instead.`), so a person recognises the error and its `param`.

Each takes the value and the parameter's path and returns the value, typed."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from tollway.errors import InvalidRequest
from tollway.wire.bounds import MAX_DEPTH, Path, openai_path, shortened, too_deep_at

INT64_MAX = 2**63 - 1  # what every store and upstream can hold
T = TypeVar("T")


def json_type(v: Any) -> str:
    """The JSON name of a parsed value's type: string, integer, object, ..."""
    if isinstance(v, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", type(None): "null", int: "integer",
            float: "number"}.get(type(v), type(v).__name__)


def _a(kind: str) -> str:
    return kind if kind == "null" else ("an " if kind[0] in "aeiou" else "a ") + kind


def shown(v: Any, limit: int = 80) -> str:
    """A value as a message quotes it, cut short: it is the caller's own input."""
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(f"Invalid type for '{param}': expected {expected}, but got "
                          f"{_a(json_type(value))} instead.", param=param, code="invalid_type")


def bad_value(param: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid value for '{param}': {problem}.", param=param,
                          code="invalid_value")


def missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                          code="missing_required_parameter")


def obj(v: Any, param: str) -> dict[str, Any]:
    if v is None:
        raise missing(param)
    if not isinstance(v, dict):
        raise wrong_type(param, "an object", v)
    return v


def array(v: Any, param: str) -> list[Any]:
    if v is None:
        raise missing(param)
    if not isinstance(v, list):
        raise wrong_type(param, "an array", v)
    return v


def string(v: Any, param: str, *, nonempty: bool = False) -> str:
    if v is None:
        raise missing(param)
    if not isinstance(v, str):
        raise wrong_type(param, "a string", v)
    if nonempty and not v:
        raise bad_value(param, "empty string; expected a non-empty string")
    return v


def boolean(v: Any, param: str) -> bool:
    if not isinstance(v, bool):
        raise wrong_type(param, "a boolean", v)
    return v


def integer(v: Any, param: str, lo: int = -INT64_MAX - 1, hi: int = INT64_MAX) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise wrong_type(param, "an integer", v)
    if not lo <= v <= hi:
        raise bad_value(param, f"{v} is out of range; expected {lo} to {hi}")
    return v


def number(v: Any, param: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise wrong_type(param, "a number", v)
    if not (math.isfinite(v) and lo <= v <= hi):
        raise bad_value(param, f"{v} is out of range; expected {lo:g} to {hi:g}")
    return float(v)


def optional(check: Callable[..., T], v: Any, param: str, *args: Any) -> T | None:
    """`check` unless the value is absent or null (null means unset)."""
    return None if v is None else check(v, param, *args)


def shallow(v: Any, prefix: Path) -> None:
    """A value that may hold anything (a tool, a content part, a forwarded parameter)
    nests within `bounds.MAX_DEPTH` levels of the body."""
    found = too_deep_at(v, prefix)
    if found is not None:
        raise bad_value(openai_path(shortened(found)), f"nested more than {MAX_DEPTH} "
                        "levels deep (the limit)")
