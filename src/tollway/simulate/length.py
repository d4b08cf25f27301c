"""How long an answer is, drawn from the prompt.

A real model's answers vary in length with what was asked: "thanks!" gets a line,
a question a few paragraphs, "write a long essay" or "repeat this 100 times" as much as
the output limit allows. The draw is seeded by the prompt (the last user message), so
the same prompt always gets the same length, on every machine and run. A configured
`output_tokens` pins every answer to that length instead (the tests' default).
"""

from __future__ import annotations

import hashlib
import math
import re

# With no max tokens in the request, a model stops at its own output limit.
MODEL_OUTPUT_CAP = 16_384
_REPEAT = re.compile(r"\brepeat\b.*?\b(\d{1,6})\s*(?:x\b|times\b)", re.IGNORECASE | re.DOTALL)
_LONG = re.compile(r"\b(?:write|give|produce|generate)\b[^.?!]{0,40}\b(?:long|detailed|"
                   r"lengthy|full|complete|comprehensive)\b|\bessay\b|\bin (?:great )?detail\b",
                   re.IGNORECASE)
_ACK = re.compile(r"^\W*(?:thanks?|thank you|thx|ok(?:ay)?|great|cool|got it|perfect|"
                  r"awesome|nice|bye|hi|hello|yes|no)\b[\w\s!.,]{0,24}$", re.IGNORECASE)


def _uniforms(prompt_key: str) -> tuple[float, float]:
    h = hashlib.blake2b(prompt_key.encode(), digest_size=16, person=b"sim-length").digest()
    a = int.from_bytes(h[:8], "little")
    b = int.from_bytes(h[8:], "little")
    return (a + 1) / (2**64 + 1), (b + 1) / (2**64 + 1)


def _lognormal(prompt_key: str, median: float, sigma: float) -> float:
    u1, u2 = _uniforms(prompt_key)
    z = math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)  # Box-Muller
    return median * math.exp(sigma * z)


def natural_length(prompt_key: str) -> int:
    """The answer's length in tokens before any max-tokens cap: long when asked to repeat
    something N times or to write something long, short for an acknowledgement, else a
    log-normal draw around a few paragraphs."""
    if m := _REPEAT.search(prompt_key):
        # What is repeated is typically a sentence or a previous answer: ~20-60 tokens.
        unit = 20 + int(_uniforms(prompt_key)[0] * 40)
        return max(1, min(int(m.group(1)) * unit, MODEL_OUTPUT_CAP))
    if _LONG.search(prompt_key):
        return round(min(max(_lognormal(prompt_key, 1400, 0.35), 600), 4000))
    if _ACK.match(prompt_key.strip()):
        return round(min(max(_lognormal(prompt_key, 14, 0.4), 4), 40))
    return round(min(max(_lognormal(prompt_key, 180, 0.6), 12), 1200))


def answer_length(prompt_key: str, pinned: int | None, limit: int | None) -> tuple[int, bool]:
    """(tokens the answer has, whether the request's max tokens cut it short)."""
    want = pinned if pinned is not None else natural_length(prompt_key)
    if limit is not None and limit < want:
        return limit, True
    return want, False
