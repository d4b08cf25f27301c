"""What to answer, independent of wire format.

Each dialect parses its request into a `SimRequest`; `plan_choices` turns that into one
`ChoicePlan` per choice: the exact text (or tool call), its per-token pieces for
streaming, its token count, and why it finished.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from tollway.accounting.tokens import count_text
from tollway.simulate.length import answer_length
from tollway.simulate.prefix import Segment
from tollway.simulate.text import reply_pieces, reply_text, token_pieces
from tollway.types import EmbeddingRequest

Finish = Literal["stop", "length", "tool_calls"]


@dataclass(slots=True)
class ToolSpec:
    """The tool the reply calls."""

    name: str
    parameters: dict[str, Any] | None


@dataclass(slots=True, frozen=True)
class EmbeddingSpec:
    """An embeddings request to answer, and the size of its vectors."""

    req: EmbeddingRequest
    size: int  # the model's own
    dimensions: int  # what goes out: the first `dimensions` of it, renormalised


@dataclass(slots=True)
class SimRequest:
    model: str
    prompt_key: str
    prompt_tokens: int
    stream: bool = False
    n: int = 1
    limit: int | None = None
    stop: list[str] = field(default_factory=list)
    tool: ToolSpec | None = None
    # None: plain text. Otherwise the reply is a JSON object (schema may be None).
    json_mode: bool = False
    json_schema: dict[str, Any] | None = None
    include_usage: bool = False
    # An embeddings request: no output, answered after ttft_ms.
    embedding: EmbeddingSpec | None = None
    # The Responses endpoint's: what the output holds besides the answer (reasoning,
    # encrypted, web_search), and the request, which the Response object repeats.
    features: frozenset[str] = frozenset()
    echo: dict[str, Any] = field(default_factory=dict)
    # The prompt as the provider's cache sees it (`prefix.py`), and what the server's
    # prefix cache found for it: tokens read from the cache, and (Anthropic) written.
    segments: tuple[Segment, ...] = ()
    cached_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(slots=True)
class ToolCallPlan:
    id_suffix: str  # the dialect adds its prefix ("call_" / "toolu_")
    name: str
    arguments: str
    name_tokens: int


@dataclass(slots=True)
class ChoicePlan:
    # The content, or the tool call's arguments when `tool_call` is set.
    text: str
    # `text` split into tokens; `weights[i]` is how many tokens `pieces[i]` is (None: 1 each).
    pieces: Sequence[str]
    weights: Sequence[int] | None
    tokens: int
    finish: Finish
    stop_sequence: str | None = None
    tool_call: ToolCallPlan | None = None


def _digest(*parts: str, size: int = 12) -> str:
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=size).hexdigest()


def _sample(schema: Any, words: str) -> Any:
    """A small value that fits `schema`: required properties only, strings from `words`."""
    if not isinstance(schema, dict):
        return {}
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        return {k: _sample(props.get(k, {}), words) for k in required if isinstance(k, str)}
    return {"string": words, "integer": 1, "number": 1.5, "boolean": True, "array": [],
            "null": None}.get(kind, words)


def _json_content(req: SimRequest, n_words: int, choice: int) -> str:
    words = reply_text(req.prompt_key, max(n_words, 1), choice)
    schema = req.json_schema
    obj = _sample(schema, words) if schema is not None else None
    if not isinstance(obj, dict) or not obj:
        obj = {"reply": words}
    return orjson.dumps(obj).decode()


def _json_choice(req: SimRequest, target: int, choice: int) -> str:
    """A JSON object of about `target` tokens: measure the wrapping once, then fill."""
    overhead = count_text(_json_content(req, 1, choice), req.model) - 1
    return _json_content(req, target - overhead, choice)


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    cut, hit = len(text), None
    for s in stops:
        i = text.find(s) if s else -1
        if 0 <= i < cut:
            cut, hit = i, s
    return text[:cut], hit


def _text_choice(req: SimRequest, target: int, capped: bool, choice: int) -> ChoicePlan:
    finish: Finish = "length" if capped else "stop"
    if req.json_mode:
        text = _json_choice(req, target, choice)
        pieces, weights = token_pieces(text, req.model)
        return ChoicePlan(text, pieces, weights, sum(weights), finish)
    text = reply_text(req.prompt_key, target, choice)
    if req.stop:
        cut, hit = _cut_at_stop(text, req.stop)
        if hit is not None:
            pieces, weights = token_pieces(cut, req.model)
            return ChoicePlan(cut, pieces, weights, sum(weights), "stop", stop_sequence=hit)
    # The fast path: one token per piece, by construction.
    return ChoicePlan(text, reply_pieces(req.prompt_key, target, choice), None, target, finish)


def _tool_choice(req: SimRequest, tool: ToolSpec, choice: int) -> ChoicePlan:
    words = reply_text(req.prompt_key, 2, choice)
    args = orjson.dumps(_sample(tool.parameters or {}, words)).decode()
    pieces, weights = token_pieces(args, req.model)
    name_tokens = count_text(tool.name, req.model)
    call = ToolCallPlan(_digest(req.prompt_key, str(choice), tool.name), tool.name, args,
                        name_tokens)
    # Tool-call cost = name + arguments tokens.
    return ChoicePlan(args, pieces, weights, name_tokens + sum(weights), "tool_calls",
                      tool_call=call)


def plan_choices(req: SimRequest, output_tokens: int | None) -> list[ChoicePlan]:
    """The answers: `output_tokens` long when pinned, else as long as the prompt
    suggests (`length.py`), cut at the request's max tokens."""
    target, capped = answer_length(req.prompt_key, output_tokens, req.limit)
    if req.tool is not None:
        return [_tool_choice(req, req.tool, i) for i in range(req.n)]
    return [_text_choice(req, target, capped, i) for i in range(req.n)]


def response_id(prefix: str, seed: int, counter: int, size: int = 12) -> str:
    """Realistic-looking ids that are still reproducible from the seed."""
    return prefix + _digest(str(seed), str(counter), size=size)
