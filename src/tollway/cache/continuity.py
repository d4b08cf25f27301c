"""Whether a latest turn the rules let stand alone (cache/standalone.py) still leans on
the conversation by meaning: the second check before its answer is shared across
conversations.

The rules see words; they miss a question whose object is implicit ("how do I get a
replacement?" after "my charger stopped working"), a comparison with something said
before ("is there a quicker option?" after a shipping time), and a question shaped by
what the user said of themselves ("do you deliver on weekends?" after "I live in rural
Canada"). Each such turn is about the same thing as the turns just before it, so its
embedding is close to theirs; an FAQ asked after unrelated talk is not. A turn whose
cosine with the last two user turns or the last assistant turn reaches
`CONTINUITY_THRESHOLD` is treated as depending on them.

The threshold was chosen on the labelled pairs of tests/data/cross_cache_pairs.jsonl
except the "held-out 3" bank (bench/cross_cache.py reports that bank on its own):
there the first wrong hit appears at 0.22; 0.18 keeps a margin below it. It errs
towards "depends": an FAQ about the topic just discussed ("how do I track a parcel?"
after "my parcel hasn't arrived") is not shared, which costs hits, never answers.

The query's embedding is the one the semantic cache computes anyway; the earlier user
turns were each a latest turn before, so their embeddings are usually still kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tollway.types import Message

CONTINUITY_THRESHOLD = 0.18
USER_TURNS = 2  # the user turns before the latest one that are compared with it
# An assistant turn is compared by its end (where a question to the user stands), and
# a long one is not embedded whole.
ASSISTANT_CHARS = 400


def context_texts(earlier: Sequence[Message]) -> list[str]:
    """The recent turns a latest turn is compared with: the last `USER_TURNS` user
    turns and the last assistant turn, as plain text (empty ones left out)."""
    users: list[str] = []
    assistant: str | None = None
    for m in reversed(earlier):
        if m.role == "user" and len(users) < USER_TURNS:
            users.append(m.text())
        elif m.role == "assistant" and assistant is None:
            assistant = m.text()[-ASSISTANT_CHARS:]
        if len(users) >= USER_TURNS and assistant is not None:
            break
    texts = [*users, *([assistant] if assistant is not None else [])]
    return [t for t in texts if t.strip()]


def continuity(query: npt.NDArray[np.float32],
               context: Sequence[npt.NDArray[np.float32]]) -> float:
    """The highest cosine between the query and a recent turn (unit vectors); 0 with
    no context."""
    return max((float(query @ v) for v in context), default=0.0)


def leans_on_context(query: npt.NDArray[np.float32],
                     context: Sequence[npt.NDArray[np.float32]]) -> bool:
    return continuity(query, context) >= CONTINUITY_THRESHOLD
