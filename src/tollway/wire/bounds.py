"""How deep a request's JSON may nest, and how it names a place in it.

Everything downstream walks a request recursively: orjson refuses to encode past 255
levels (a 500 once the request was already accepted), fastjsonschema generates one
indentation level per schema level (Python stops at 100), the token counter and the
cache key recurse too. So the depth is bounded where the body is parsed, and a request
past it is a 400 naming where it went too deep. 64 levels leave room for any real
request: OpenAI's structured outputs allow 10 levels of schema nesting, a tool's schema
starts 3 levels down (`tools[0].function.parameters`) and each schema level is two
JSON levels (`properties.<name>`).
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64
# A model or end-user name: it becomes part of the ledger row, counters' names and
# log lines; PostgreSQL text cannot hold NUL.
MAX_NAME = 256

Path = list[str | int]


def too_deep(value: Any, limit: int = MAX_DEPTH) -> Path | None:
    """The path to the first container nested deeper than `limit` levels (the body
    itself is level 1), or None."""
    if _within(value, limit):
        return None  # the common case, checked without keeping paths
    found = _below(value, limit - 1)
    if found is not None:
        found.reverse()
    return found


def too_deep_at(value: Any, prefix: Path, limit: int = MAX_DEPTH) -> Path | None:
    """`too_deep` for a value found at `prefix` in the body: the parts of a parsed
    request that may hold anything (the rest has a type that bounds it)."""
    kind = type(value)
    if kind is not dict and kind is not list:
        return None
    found = too_deep(value, limit - len(prefix))
    return None if found is None else [*prefix, *found]


def _within(body: Any, limit: int) -> bool:
    """Level by level, without recursion: every container is visited once."""
    level, depth = [body], 1
    while level:
        below = []
        for container in level:
            for child in container.values() if type(container) is dict else container:
                kind = type(child)
                if kind is dict or kind is list:
                    below.append(child)
        if below and depth == limit:
            return False
        level, depth = below, depth + 1
    return True


def _below(value: Any, left: int) -> Path | None:
    """The path to a container `left` levels below `value`'s children; recursion
    stops there."""
    items = value.items() if type(value) is dict else enumerate(value)
    for key, child in items:
        kind = type(child)
        if kind is dict or kind is list:
            if left == 0:
                return [key]
            found = _below(child, left - 1)
            if found is not None:
                found.append(key)
                return found
    return None


def name_problem(text: str) -> str | None:
    """What is wrong with a name the ledger will record, if anything."""
    if len(text) > MAX_NAME:
        return f"at most {MAX_NAME} characters, got {len(text)}"
    if "\x00" in text:
        return "must not contain NUL characters"
    return None


def openai_path(path: Path) -> str:
    """`tools[0].function.parameters`: how OpenAI names a parameter."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def anthropic_path(path: Path) -> str:
    """`tools.0.input_schema`: how Anthropic names one."""
    return ".".join(str(p) for p in path)


def shortened(path: Path, keep: int = 6) -> Path:
    """The first `keep` steps of a long path: the parameter that holds the too-deep
    part, named briefly enough to read."""
    return path[:keep]
