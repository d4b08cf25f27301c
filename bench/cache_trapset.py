"""The semantic cache's trap set: hand-written items -> labelled pairs.

    .venv/bin/python bench/cache_trapset.py   # rewrites tests/data/cache_trapset_*.jsonl

Each line of tests/data/trapset/{tune,holdout}.txt is one item written by hand:
`kind | anchor | paraphrase or - | trap | trap...`. It becomes pairs against the anchor:

- its paraphrase (same, kind "paraphrase");
- two near-repeats of the anchor made here, changing only case, punctuation,
  whitespace, contractions or polite framing (same, kind "near-repeat");
- each trap as written, and again in a varied surface form, so that normalisation
  cannot open a hole (not same; the item's kind, "topic" for a paraphrase item's trap).

Code only varies surface forms; every meaning in the set was written by hand. The
variation is seeded by the text, so the files are reproducible. The two halves were
written separately: `tune` is what the verification rules were developed against,
`holdout` is only measured (bench/cache_precision.py reports both).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "tests" / "data" / "trapset"
OUT = ROOT / "tests" / "data"
HALVES = ("tune", "holdout")

_PREFIXES = ["please ", "can you tell me ", "tell me ", "hey, ", "quick question: ",
             "I'd like to know ", "do you know ", "could you please tell me ", "hi! ",
             "I was wondering ", "can you explain ", "Please, "]
_SUFFIXES = [" please", " thanks", ", thank you!", " pls", "?? thanks in advance",
             " please?"]
_CONTRACT = [("do not", "don't"), ("does not", "doesn't"), ("is not", "isn't"),
             ("can not", "can't"), ("cannot", "can't"), ("what is", "what's"),
             ("What is", "What's"), ("I am", "I'm"), ("it is", "it's"), ("I would", "I'd"),
             ("will not", "won't"), ("are not", "aren't"), ("How is", "How's")]


def _rng(text: str, salt: str) -> random.Random:
    return random.Random(hashlib.sha256((salt + text).encode()).digest())


def _case(t: str, r: random.Random) -> str:
    return r.choice([t.lower(), t.upper(), t[:1].lower() + t[1:],
                     t[:1].upper() + t[1:] if t[:1].islower() else t.swapcase()])


def _punct(t: str, r: random.Random) -> str:
    core = t.rstrip("?.! ")
    return core + r.choice(["", "?", " ?", "??", ".", "!", "?!", "..."])


def _space(t: str, r: random.Random) -> str:
    words = t.split(" ")
    i = r.randrange(len(words))
    words[i] = words[i] + r.choice(["  ", "\t", "   "])
    return r.choice(["", " ", "  "]) + " ".join(words) + r.choice(["", " ", "\n"])


def _contract(t: str, r: random.Random) -> str:
    pairs = [(a, b) for a, b in _CONTRACT if a in t] + [(b, a) for a, b in _CONTRACT
                                                       if b in t]
    if not pairs:
        return _punct(t, r)
    a, b = r.choice(pairs)
    return t.replace(a, b, 1)


def _filler(t: str, r: random.Random) -> str:
    if r.random() < 0.6:
        p = r.choice(_PREFIXES)
        return p + t[:1].lower() + t[1:]
    return t.rstrip("?") + r.choice(_SUFFIXES)


_VARIANTS = [_case, _punct, _space, _contract, _filler]


def near_repeats(anchor: str, n: int = 2) -> list[str]:
    """n different surface variants of `anchor`: one or two changes each."""
    r = _rng(anchor, "near")
    out: list[str] = []
    while len(out) < n:
        fs = r.sample(_VARIANTS, r.choice([1, 2]))
        t = anchor
        for f in fs:
            t = f(t, r)
        if t != anchor and t not in out:
            out.append(t)
    return out


def varied(text: str) -> str:
    r = _rng(text, "trap")
    return r.choice(_VARIANTS)(text, r)


def items(half: str) -> list[tuple[str, str, str | None, list[str]]]:
    out = []
    for n, line in enumerate((SOURCES / f"{half}.txt").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(" | ")]
        if len(parts) < 4:
            raise ValueError(f"{half}.txt:{n}: kind | anchor | paraphrase | trap...")
        kind, anchor, para, *traps = parts
        out.append((kind, anchor, None if para == "-" else para, traps))
    return out


def pairs(half: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for i, (kind, anchor, para, traps) in enumerate(items(half)):
        item = f"{half}-{i}"
        if para is not None:
            rows.append({"a": anchor, "b": para, "same": True, "kind": "paraphrase",
                         "item": item})
        for v in near_repeats(anchor):
            rows.append({"a": anchor, "b": v, "same": True, "kind": "near-repeat",
                         "item": item})
        trap_kind = "topic" if kind == "paraphrase" else kind
        for t in traps:
            for b in (t, varied(t)):
                if re.sub(r"\W", "", b.lower()) == re.sub(r"\W", "", anchor.lower()):
                    raise ValueError(f"{item}: a trap equal to its anchor: {b!r}")
                rows.append({"a": anchor, "b": b, "same": False, "kind": trap_kind,
                             "item": item})
    return rows


def main() -> int:
    for half in HALVES:
        rows = pairs(half)
        path = OUT / f"cache_trapset_{half}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        kinds: dict[str, int] = {}
        for r in rows:
            kinds[str(r["kind"])] = kinds.get(str(r["kind"]), 0) + 1
        print(f"{path.relative_to(ROOT)}: {len(rows)} pairs {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
