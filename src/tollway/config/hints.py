"""What a configuration error suggests: the valid values of a setting that takes one of
a few, and the nearest valid name for a misspelt one ("did you mean"). The expected
type is read off the structs themselves, so a new field or value needs no entry here."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

import msgspec
from msgspec import inspect

# msgspec's path segments: `.field`, `[0]` (a list's item) and `[...]` (a mapping's value).
_SEGMENT = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\.\.\.)\]")
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(.+?)`")
_BAD_VALUE = re.compile(r"Invalid enum value (.+)")


def nearest(word: str, choices: Iterable[str]) -> str | None:
    """The choice `word` most likely misspells, if one is close enough."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)', or '' when nothing is close."""
    found = nearest(word, choices)
    return f" (did you mean {found!r}?)" if found else ""


def _node(root: type, path: str, raw: Any) -> tuple[inspect.Type | None, str]:
    """The type expected at msgspec's `path` (e.g. models[...].deployments[0]) under
    `root`, through mappings, lists and optional values (None if the path leaves it),
    and the path with each `[...]` named: the first entry of `raw` there that does not
    convert, as msgspec stops at the first."""
    node: inspect.Type = inspect.type_info(root)
    named = ""
    for m in _SEGMENT.finditer(path):
        node = _concrete(node)
        if m.group(1) is not None:
            if not isinstance(node, inspect.StructType):
                return None, path
            field = next((f for f in node.fields if f.encode_name == m.group(1)), None)
            if field is None:
                return None, path
            node, named = field.type, f"{named}.{m.group(1)}" if named else m.group(1)
            raw = raw.get(m.group(1)) if isinstance(raw, dict) else None
        elif isinstance(node, inspect.DictType):
            node = node.value_type
            found = _failing_entry(raw, node)
            named, raw = (f"{named}[...]", None) if found is None else (
                f"{named}.{found[0]}", found[1])
        elif isinstance(node, inspect.ListType | inspect.VarTupleType):
            node = node.item_type
            named += f"[{m.group(2)}]"
            index = int(m.group(2)) if m.group(2).isdigit() else -1
            raw = raw[index] if isinstance(raw, list) and 0 <= index < len(raw) else None
        else:
            return None, path
    return _concrete(node), named


def _failing_entry(raw: Any, value_type: inspect.Type) -> tuple[Any, Any] | None:
    """(key, value) of the first entry of the mapping `raw` whose value does not convert
    to `value_type` (a struct; for other types the key stays unnamed)."""
    if not isinstance(raw, dict) or not isinstance(value_type, inspect.StructType):
        return None
    for key, value in raw.items():
        try:
            msgspec.convert(value, value_type.cls, strict=False)
        except msgspec.ValidationError:
            return key, value
    return None


def _concrete(node: inspect.Type) -> inspect.Type:
    """An optional value's type without its None."""
    if isinstance(node, inspect.UnionType):
        others = [t for t in node.types if not isinstance(t, inspect.NoneType)]
        if len(others) == 1:
            return others[0]
    return node


def _choices(node: inspect.Type | None) -> list[str] | None:
    if isinstance(node, inspect.LiteralType):
        return [str(v) for v in node.values]
    if isinstance(node, inspect.EnumType):
        return [str(m.value) for m in node.cls]
    return None


def hint(node: inspect.Type | None, problem: str) -> str:
    """`problem` (msgspec's words about a value of type `node`) with what would be
    valid."""
    m = _UNKNOWN_FIELD.fullmatch(problem)
    if m and isinstance(node, inspect.StructType):
        names = [f.encode_name for f in node.fields]
        close = nearest(m.group(1), names)
        if close:
            return f"unknown field `{m.group(1)}` (did you mean `{close}`?)"
        return f"unknown field `{m.group(1)}`; the fields here are {', '.join(names)}"
    choices = _choices(node)
    if choices is None:
        return problem
    m = _BAD_VALUE.fullmatch(problem)
    if m:
        given = m.group(1).strip("'\"")
        return (f"invalid value {m.group(1)}: expected one of {', '.join(choices)}"
                + did_you_mean(given, choices))
    return f"{problem}: one of {', '.join(choices)}"


def explain(root: type, error: msgspec.ValidationError, raw: Any) -> str:
    """'<field path>: <problem, with what would be valid>' for an error converting
    `raw` to `root`."""
    msg = str(error)
    m = re.search(r" - at (`key` in )?`\$\.?(.*)`$", msg)
    path, problem = (m.group(2), msg[: m.start()]) if m else ("", msg)
    if m and m.group(1):
        problem = f"a key: {problem}"
    node, named = _node(root, path, raw)
    return f"{named or '(top level)'}: {hint(node, problem)}"
