"""Provider prompt caching, as the providers report it.

A prompt is a sequence of `Segment`s (the tools and system prompt, then one per
message) with their token counts; a prefix is identified by a hash chained over its
segments, so two prompts share a cached prefix exactly when their first segments are
identical. Matching is per segment, not per token: a real cache can also match part of
the first differing message, which is at most that message's tokens.

- OpenAI (automatic): the longest prefix of this model's earlier prompts is read from
  the cache, counted in 128-token steps once it is at least 1,024 tokens
  (`usage.prompt_tokens_details.cached_tokens`). Every prompt is cached.
- Anthropic (`cache_control` breakpoints): only prefixes ending at a breakpoint are
  cached, and only from 1,024 tokens. The longest cached prefix up to the last
  breakpoint is read (`cache_read_input_tokens`); the rest up to that breakpoint is
  written (`cache_creation_input_tokens`); `input_tokens` is what is left.

The state is bounded (least recently used prefixes go first) and no time-to-live is
modelled: a replay runs faster than the providers' 5-minute expiry anyway.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import msgspec

from tollway.accounting.tokens import message_costs
from tollway.types import Message

MIN_CACHED = 1024
OPENAI_STEP = 128
MAX_ENTRIES = 200_000


@dataclass(slots=True, frozen=True)
class Segment:
    """A piece of the prompt in order: what it holds (any stable serialization), its
    tokens, and whether an Anthropic `cache_control` breakpoint ends it."""

    key: bytes
    tokens: int
    breakpoint: bool = False


@dataclass(slots=True, frozen=True)
class CacheUse:
    read: int = 0
    written: int = 0


def _chain(segments: tuple[Segment, ...]) -> list[tuple[bytes, int]]:
    """(hash of the prefix ending with segment i, its tokens) for each i."""
    out: list[tuple[bytes, int]] = []
    h, total = b"", 0
    for s in segments:
        h = hashlib.blake2b(h + s.key, digest_size=16).digest()
        total += s.tokens
        out.append((h, total))
    return out


class PrefixCache:
    """The prefixes each model has seen, oldest first; bounded by `max_entries`."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max = max_entries
        self._seen: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _hit(self, key: tuple[str, str, bytes]) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        return False

    def _add(self, key: tuple[str, str, bytes]) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def _longest(self, kind: str, model: str, chain: list[tuple[bytes, int]]) -> int:
        for h, tokens in reversed(chain):
            if self._hit((kind, model, h)):
                return tokens
        return 0

    def automatic(self, model: str, segments: tuple[Segment, ...]) -> CacheUse:
        """OpenAI: the longest seen prefix, in 128-token steps from 1,024; then this
        prompt's prefixes are remembered."""
        chain = [c for c in _chain(segments) if c[1] >= MIN_CACHED]
        hit = self._longest("auto", model, chain)
        for h, _ in chain:
            self._add(("auto", model, h))
        return CacheUse(read=hit // OPENAI_STEP * OPENAI_STEP if hit >= MIN_CACHED else 0)

    def breakpoints(self, model: str, segments: tuple[Segment, ...]) -> CacheUse:
        """Anthropic: read the longest cached prefix up to the last breakpoint, write
        the rest up to it; each breakpoint's prefix is remembered."""
        chain = _chain(segments)
        marks = [i for i, s in enumerate(segments)
                 if s.breakpoint and chain[i][1] >= MIN_CACHED]
        if not marks:
            return CacheUse()
        last = marks[-1]
        read = self._longest("bp", model, chain[:last + 1])
        for i in marks:
            self._add(("bp", model, chain[i][0]))
        return CacheUse(read=read, written=chain[last][1] - read)


def chat_segments(messages: list[Message], model: str, prompt_tokens: int,
                  head: bytes) -> tuple[Segment, ...]:
    """An OpenAI prompt: `head` (tools and the like, which come first) takes the tokens
    the messages do not, then one segment per message."""
    costs = message_costs(messages, model)
    first = Segment(b"head\x00" + head, max(prompt_tokens - sum(costs), 0))
    return (first, *(Segment(msgspec.json.encode(m), c)
                     for m, c in zip(messages, costs, strict=True)))


def has_breakpoint(content: object) -> bool:
    """Whether an Anthropic system prompt, message content or tool list carries a
    `cache_control` marker."""
    if isinstance(content, list):
        return any(isinstance(b, dict) and b.get("cache_control") for b in content)
    return False
