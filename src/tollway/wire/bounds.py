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
    itself is level 1), or None. Recursion stops at `limit`, so this is safe on any
    parsed JSON."""
    found = _below(value, limit - 1)
    if found is not None:
        found.reverse()
    return found


def _below(value: Any, left: int) -> Path | None:
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, child in items:
        if isinstance(child, dict | list):
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
