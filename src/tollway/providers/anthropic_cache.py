"""Where the gateway puts Anthropic prompt-cache breakpoints.

Anthropic caches a prompt prefix only where a `cache_control` breakpoint ends it, and
then bills reading it back at a tenth of the input price (writing it at 1.25x). A
chatbot resends its system prompt and history every turn, so two breakpoints pay for
themselves from the second turn on:

- on the system prompt (which also covers the tools before it), and
- on the last message before the latest one: the history this turn sends and the next
  turn will send again (with the stepped history window, for several turns).

Only where the prefix is at least `MIN_PREFIX_TOKENS` long (shorter ones are not
cached: a breakpoint there would do nothing), never more than Anthropic's 4, and never
when the caller placed breakpoints of its own: a caller who manages the cache is left
to it. Token counts are our estimate of Claude's (the OpenAI tokenizer).
"""

from __future__ import annotations

from typing import Any

import orjson

from tollway.accounting.tokens import count_text

MIN_PREFIX_TOKENS = 1024
MAX_BREAKPOINTS = 4
EPHEMERAL = {"type": "ephemeral"}


def _blocks(body: dict[str, Any]) -> list[Any]:
    out: list[Any] = list(body.get("tools") or ())
    if isinstance(body.get("system"), list):
        out += body["system"]
    for m in body.get("messages") or ():
        if isinstance(m.get("content"), list):
            out += m["content"]
            out += [c for b in m["content"] if isinstance(b, dict)
                    and isinstance(b.get("content"), list) for c in b["content"]]
    return out


def breakpoints_in(body: dict[str, Any]) -> int:
    """How many `cache_control` breakpoints an Anthropic request body carries."""
    return sum(1 for b in _blocks(body) if isinstance(b, dict) and b.get("cache_control"))


def _tokens(part: Any) -> int:
    return count_text(orjson.dumps(part).decode(), "claude")


def add_breakpoints(body: dict[str, Any]) -> int:
    """Mark the system prompt and the last stable history message of `body` (an
    Anthropic Messages request) for caching, where worth it; returns how many marks
    were added."""
    if breakpoints_in(body):
        return 0
    added = 0
    prefix = _tokens(body.get("tools") or [])
    system = body.get("system")
    if system:
        prefix += _tokens(system)
        if prefix >= MIN_PREFIX_TOKENS:
            if isinstance(system, str):
                body["system"] = system = [{"type": "text", "text": system}]
            system[-1]["cache_control"] = dict(EPHEMERAL)
            added += 1
    messages = body.get("messages") or []
    if len(messages) >= 2 and added < MAX_BREAKPOINTS:
        stable = messages[-2]
        prefix += sum(_tokens(m.get("content")) for m in messages[:-1])
        if prefix >= MIN_PREFIX_TOKENS:
            if isinstance(stable.get("content"), str):
                stable["content"] = [{"type": "text", "text": stable["content"]}]
            blocks = stable.get("content") or []
            if blocks and isinstance(blocks[-1], dict):
                blocks[-1]["cache_control"] = dict(EPHEMERAL)
                added += 1
    return added
