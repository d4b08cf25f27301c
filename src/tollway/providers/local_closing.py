"""When a JSON string or list the bundled model is writing has run long, closing it is
made more likely, a little more with every further character or item.

The grammar (`local_grammar.py`) makes every answer JSON of the schema's shape, but
not a finished one: a 135M model easily loops inside a value — the same e-mail address
again and again in one string, the same tag again and again in one list — until
`max_tokens` cuts it off. Nothing is forbidden here (a schema without `maxLength` or
`maxItems` allows any length, and a long value can still be written when the model
wants it strongly enough); the closing quote, bracket or brace only gets a logit bias
that grows past a length a small answer rarely needs. The grammar still decides which
of the biased tokens may come next.

Runs on the model thread as a llama-cpp-python logits processor: it scans each token's
bytes once, as they are generated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

# Past STRING_BYTES in a string, closing it gets more likely; once a list has LIST_ITEMS
# items (an object OBJECT_ITEMS), ending it after the latest one does.
STRING_BYTES = 32
LIST_ITEMS = 3
OBJECT_ITEMS = 12
# Logits added per byte / per item past them (an item's worth is also taken off going on:
# a looping model is very sure of its next item).
PER_BYTE = 0.5
PER_ITEM = 3.0

LIST, OBJECT = 0x5B, 0x7B  # [ {
_CLOSER = {LIST: b"]", OBJECT: b"}"}


@dataclass(frozen=True, slots=True)
class Closers:
    """The vocabulary's tokens that end a value, or go on after it (after optional
    spaces). Keyed by (what the token closes first: nothing, a string `"` or an object
    `}`; the container that then ends or goes on: LIST or OBJECT)."""

    pieces: list[bytes]
    string: npt.NDArray[np.intp]  # `"`, `",`, `"]`, …
    close: dict[tuple[bytes, int], npt.NDArray[np.intp]]  # `]`, `"]`, `}]`, …
    go_on: dict[tuple[bytes, int], npt.NDArray[np.intp]]  # `,`, `",`, `},`, …


def closers(llm: Any) -> Closers:
    """Read once per model (~50k tokens)."""
    pieces = [bytes(llm.detokenize([i])) for i in range(int(llm.n_vocab()))]

    def starting(pattern: bytes) -> npt.NDArray[np.intp]:
        match = re.compile(b" *" + pattern).match
        return np.array([i for i, p in enumerate(pieces) if match(p)], dtype=np.intp)

    keys = [(b"", LIST), (b"", OBJECT), (b'"', LIST), (b'"', OBJECT), (b"}", LIST)]
    return Closers(
        pieces, starting(b'"'),
        {(first, c): starting(re.escape(first) + b" *" + re.escape(_CLOSER[c]))
         for first, c in keys},
        {(first, c): starting(re.escape(first) + b" *,") for first, c in keys})


@dataclass(slots=True)
class _Scan:
    """Where the JSON written so far stands."""

    in_string: bool = False
    escaped: bool = False
    string_bytes: int = 0
    # The open lists and objects, innermost last: [opener byte, commas so far].
    stack: list[list[int]] = field(default_factory=list)

    def feed(self, data: bytes) -> None:
        for b in data:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                    self.string_bytes += 1
                elif b == 0x5C:  # backslash
                    self.escaped = True
                elif b == 0x22:  # quote
                    self.in_string = False
                else:
                    self.string_bytes += 1
            elif b == 0x22:
                self.in_string, self.string_bytes = True, 0
            elif b in (LIST, OBJECT):
                self.stack.append([b, 0])
            elif b in b"]}" and self.stack:
                self.stack.pop()
            elif b == 0x2C and self.stack:  # comma
                self.stack[-1][1] += 1


def _over(container: list[int]) -> int:
    """How far past its size the container's latest item (commas + 1) takes it: 1 at
    the size itself."""
    opener, commas = container
    return commas + 2 - (LIST_ITEMS if opener == LIST else OBJECT_ITEMS)


class CloseLongValues:
    """The logits processor (one per generation)."""

    def __init__(self, found: Closers) -> None:
        self.found = found
        self.scan = _Scan()
        self.seen: int | None = None  # tokens of the context already scanned

    def __call__(self, input_ids: npt.NDArray[np.intc],
                 scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        n = len(input_ids)
        if self.seen is None:
            self.seen = n  # the first call: the context is the prompt
        for token in input_ids[self.seen:n]:
            self.scan.feed(self.found.pieces[int(token)])
        self.seen = n
        scan = self.scan
        if scan.in_string and scan.string_bytes > STRING_BYTES:
            scores[self.found.string] += (scan.string_bytes - STRING_BYTES) * PER_BYTE
        if not scan.stack:
            return scores
        # A container goes on or ends in the token after its item, which may also close
        # that item: `",` or `"]` for a string, `},` or `}]` for an object in a list.
        opener = scan.stack[-1][0]
        over = _over(scan.stack[-1])
        if over > 0:
            self._nudge(scores, b'"' if scan.in_string else b"", opener, over)
        if not scan.in_string and opener == OBJECT and len(scan.stack) > 1:
            over = _over(scan.stack[-2])
            if scan.stack[-2][0] == LIST and over > 0:
                self._nudge(scores, b"}", LIST, over)
        return scores

    def _nudge(self, scores: npt.NDArray[np.single], first: bytes, container: int,
               over: int) -> None:
        scores[self.found.close[first, container]] += over * PER_ITEM
        scores[self.found.go_on[first, container]] -= over * PER_ITEM
