"""Whether a cached answer may be served for a new question: the semantic cache's match
decision, beyond the embedding similarity.

Embeddings place "cancel my subscription" and "don't cancel my subscription", "5 km"
and "5 miles", or "Celsius to Fahrenheit" and "Fahrenheit to Celsius" side by side.
So a candidate is accepted (`accept`) when

- it is a near-repeat (`near_repeat`): the same canonical form (cache/normalize.py:
  case, punctuation, whitespace, contractions, polite framing aside), nothing `verify`
  tells apart, neither text temporal. Served whatever the cosine and score; or
- neither text is temporal ("today", "latest", a date...: its answer goes stale),
  `verify` finds no difference in meaning, the cosine is at least COSINE_FLOOR and the
  match score reaches the threshold of the mode (`threshold_of`): a logistic model over
  the cosine and the lexical differences (content words on one side only, weighted by
  rarity, and how well each aligns with a word of the other text by MiniLM's
  context-free word vectors, which tells "parcel"/"package" from "Austria"/"Australia"),
  and how well the texts align token by token (cache/tokens.py: what mean pooling
  blurs, one word swapped for an unrelated one).

`verify` compares the meaning-bearing parts, one side against the other: a negation
word on one side only, then cache/contrasts.py's rules (affixal negation, opposite
words, comparison and range words, arguments reversed around to/from/into/than or two
words trading places, closed-class siblings), then clock times, numbers with their
units and bounds, a universal quantifier ("all", "every") on one side only, dates and
days, and a capitalised name (or letters folding drops) the other text lacks.

The rules are general English, not fitted. The score's weights and the two modes'
thresholds were fitted on the Quora Question Pairs dev set by bench/cache_precision.py
--fit, which also reports their cross-validated precision and recall. A decision costs
a fraction of a millisecond (texts are parsed once, word and token vectors are
cached).
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from tollway.cache.contrasts import bound_before, clock_times, contrast, is_unit, unit_after
from tollway.cache.normalize import canonical
from tollway.cache.words import stem

# -- words -----------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z0-9]+(?:[.'][A-Za-z0-9]+)*")

_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16",
    "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30",
    "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
    "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000",
    "billion": "1000000000", "first": "1", "second": "2", "third": "3", "fourth": "4",
    "fifth": "5", "half": "0.5", "dozen": "12", "twice": "2", "double": "2",
}
_MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7,
    "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
    "sept": 9, "oct": 10, "nov": 11, "dec": 12,
}
_DAYS = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
         "weekend", "weekday", "christmas", "easter", "thanksgiving",
         "halloween", "new year", "mon", "tue", "wed", "thu", "fri", "sat", "sun"}
_NEGATIONS = {"not", "no", "never", "without", "cannot", "none", "nobody", "nothing",
              "neither", "nor", "nowhere", "non"}
# "all my invoices" is not "one invoice": a universal quantifier on one side only.
_UNIVERSAL = frozenset({"all", "every", "each", "entire", "whole", "everything", "everyone",
                        "always"})
_STOP = frozenset("""
a an the and or but if then so of to in on at by for with from into onto about as is are
was were be been being am do does did doing done have has had having i me my mine we us
our you your yours he him his she her it its they them their this that these those there
here what which who whom whose when where why how can could would should will shall may
might must please some any very really just also too more most much many such own same
than get got getting way ways best good better thing things someone something one ones
tell know want need like possible steps step tips tip guide instructions help please
anyone let give
""".split())  # noqa: SIM905

# Capitalised, yet not a name that tells two questions apart ("on Earth" / "in the world").
_COMMON = frozenset({"earth", "internet", "web", "god", "ok", "okay"})

_TEMPORAL = re.compile(
    r"\b(today|tonight|tomorrow|yesterday|now|nowadays|currently|current|latest|newest|"
    r"recent|recently|breaking|upcoming|this (?:morning|evening|week|weekend|month|"
    r"year|season|quarter)|next (?:week|weekend|month|year|monday|tuesday|wednesday|"
    r"thursday|friday|saturday|sunday)|last (?:night|week|weekend|month|year)|as of|"
    r"so far|at the moment|right now|up to date|these days|this time)\b"
    r"|\b\d{4}-\d{1,2}-\d{1,2}\b"
    # a date written 5/3 or 5/3/24; not a fraction of a measure ("1/4 cup", "3/4 inch")
    r"|\b\d{1,2}/\d{1,2}(?:/\d{2,4})?\b(?!\s*(?:cups?|tbsp|tsp|teaspoons?|tablespoons?|"
    r"inch(?:es)?|in\b|miles?|lbs?|pounds?|oz|ounces?|of\b|mile|kg|g\b|litres?|liters?))"
    r"|\b(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.? \d{1,2}(?:st|nd|rd|th)?\b"
    r"|\b\d{1,2}(?:st|nd|rd|th)? (?:of )?(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|"
    r"apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|"
    r"nov(?:ember)?|dec(?:ember)?)\b",
    re.IGNORECASE)


def is_temporal(text: str) -> bool:
    """A question whose answer depends on when it is asked ("today", "latest", "this
    week", an explicit date): never served from the cache."""
    return _TEMPORAL.search(text) is not None


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


@dataclass(frozen=True, slots=True)
class Parsed:
    """What the checks need from one text, computed once."""

    words: tuple[str, ...]  # lower case, in order
    content: frozenset[str]  # stems of the words that carry meaning
    surface: tuple[tuple[str, str], ...]  # (stem, word) of those words
    numbers: frozenset[str]
    dates: frozenset[str]
    stems: frozenset[str]  # every word, stemmed
    names: frozenset[str]  # lower-cased capitalised words that are not sentence-initial
    negated: bool
    universal: bool  # "all", "every", "entire"...
    times: frozenset[str]  # clock times, "HH:MM"
    units: frozenset[tuple[str, str]]  # (number, unit) of each number with a unit
    bounds: frozenset[tuple[str, str]]  # ("<" or ">", number): "under 12", "over 12"
    script: frozenset[str]  # letters folding to ASCII loses ("无语"): compared as they are
    # what word order is compared on (contrasts' direction rule): the content stems and
    # the short or capitalised words they leave out ("C", "US", "O2")
    ordered: frozenset[str]


_stem = stem  # the stemmer lives in cache/words.py


def _number(w: str) -> tuple[str, str] | None:
    """(the number, a unit glued to it: "5km" -> ("5", "km")) or None."""
    if w in _NUMBER_WORDS:
        return _NUMBER_WORDS[w], ""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(st|nd|rd|th|x\d+|[a-z]{1,3})?", w)
    if m:
        suffix = m.group(2) or ""
        return m.group(1).lstrip("0") or "0", "" if suffix in ("st", "nd", "rd", "th") else suffix
    return None


_CURRENCY = re.compile(r"([£$€¥])\s?(\d[\d,]*(?:\.\d+)?)")
_CURRENCY_CODE = {"£": "gbp", "$": "usd", "€": "eur", "¥": "jpy"}


def _day(w: str) -> str | None:
    """The day a word names ("mon", "monday", "mondays" -> "mon"; "weekends" ->
    "weekend"), or None."""
    w = w.removesuffix("s") if w not in _DAYS else w
    if w not in _DAYS:
        return None
    return w[:3] if w.endswith("day") and w != "weekday" else w


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Parsed:
    text = _CURRENCY.sub(lambda m: f"{m.group(2).replace(',', '')} "
                         f"{_CURRENCY_CODE[m.group(1)]}", text.replace("%", " percent"))
    text, times = clock_times(text)
    folded = _fold(text.replace("\u2019", "'"))  # before folding drops it
    script = frozenset(c for c in unicodedata.normalize("NFKD", text)
                       if ord(c) > 127 and c.isalpha())
    raw = _WORD.findall(folded)
    raw = [r[:-2] if r.lower().endswith("'s") else r for r in raw]  # possessives
    words = tuple(w.lower() for w in raw)
    numbers: set[str] = set()
    units: set[tuple[str, str]] = set()
    bounds: set[tuple[str, str]] = set()
    dates: set[str] = set()
    names: set[str] = set()
    content: set[str] = set()
    surface: dict[str, str] = {}
    negs = 0
    universal = False
    ordered: set[str] = set()
    for i, (w, r) in enumerate(zip(words, raw, strict=True)):
        base = w.replace("'", "")
        if r.isupper() or (i > 0 and r[0].isupper()) or any(c.isdigit() for c in r) or (
                len(r) == 1 and r.isalpha() and w not in ("a", "i")):
            ordered.add(_stem(base))
        if w in _UNIVERSAL:
            universal = True
            continue
        if w.endswith("n't") or w in _NEGATIONS:
            negs += 1
            continue
        num = _number(w)
        if num is not None:
            n, suffix = num
            if len(n) == 4 and n[:2] in ("19", "20") and not suffix:  # a year
                dates.add(n)
            else:
                numbers.add(n)
                unit = unit_after(words, i, suffix)
                if unit:
                    units.add((n, unit))
                bound = bound_before(words, i)
                if bound:
                    bounds.add((bound, n))
            continue
        if any(c.isdigit() for c in w):  # "q3", "ios17", "h264", "800x600": its digits count
            numbers.update(d.lstrip("0") or "0" for d in re.findall(r"\d+", w))
            continue
        if (w in _MONTHS and (w != "may" or (r[0] == "M" and i > 0))
                and w not in ("mar", "sat", "sun")):
            dates.add(str(_MONTHS[w]))
            continue
        day = _day(w)
        if day is not None:
            dates.add(day)
            continue
        if (i > 0 and r[0].isupper() and not r.isupper() and w not in _STOP
                and w not in _COMMON and not is_unit(w)):
            names.add(w)
        if w not in _STOP and len(base) > 1:
            content.add(_stem(base))
            surface[_stem(base)] = base
    stems = frozenset(_stem(w.replace("'", "")) for w in words) | _particles(words)
    return Parsed(words=words, content=frozenset(content), surface=tuple(surface.items()),
                  numbers=frozenset(numbers),
                  dates=frozenset(dates), stems=stems, names=frozenset(names),
                  negated=negs % 2 == 1, universal=universal, times=times,
                  units=frozenset(units), bounds=frozenset(bounds),
                  ordered=frozenset(ordered | content), script=script)


_PARTICLES = frozenset({"in", "out", "on", "off", "up", "down"})
_AFTER_PARTICLE = frozenset({"on", "of", "to", "at", "with", "for", "and", "or", "from",
                             "by"})


def _particles(words: tuple[str, ...]) -> frozenset[str]:
    """"in_" for "zoom in on", "turn it off", "log out of": a particle (last word, or
    before a preposition), not the preposition of "smell in carpets"."""
    return frozenset(w + "_" for i, w in enumerate(words) if w in _PARTICLES and (
        i + 1 == len(words) or words[i + 1] in _AFTER_PARTICLE))


_DEMONYM = ("n", "ns", "an", "ans", "ian", "ians", "i", "is", "s", "es", "ese", "ish")


def _unmatched(names: frozenset[str], other: Parsed) -> bool:
    """A name the other text does not mention, in any case or form ("Russia" /
    "Russians", "Pakistan" / "Pakistanis"; not "Austria" / "Australia")."""
    for n in names:
        if n in other.words or _stem(n) in other.content:
            continue
        if any(len(w) >= 4 and ((n.startswith(w) and n[len(w):] in _DEMONYM)
                                or (w.startswith(n) and w[len(n):] in _DEMONYM))
               for w in other.words):
            continue
        return True
    return False


def _units_differ(a: frozenset[tuple[str, str]], b: frozenset[tuple[str, str]]) -> bool:
    """A number with a unit on both sides, a different one ("5 km" / "5 miles"); a unit
    on one side only ("after 19 years" / "after 19") is how people write."""
    for n in {n for n, _ in a} & {n for n, _ in b}:
        if not {u for m, u in a if m == n} & {u for m, u in b if m == n}:
            return True
    return False


def _bounds_differ(a: frozenset[tuple[str, str]], b: frozenset[tuple[str, str]]) -> bool:
    """A number bounded the other way ("under 12" / "over 12"); a bound on one side only
    ("best laptop under 30000" / "best laptop for 30000") is how people write."""
    return any((">" if d == "<" else "<", n) in b and (d, n) not in b for d, n in a)


REASONS = ("negation", "affix", "comparison", "opposite", "direction", "time", "unit",
           "number", "scope", "date", "sibling", "entity")


def verify(a: str, b: str) -> str | None:
    """None if nothing forbids serving a's answer for b, else why not (one of REASONS:
    a negation word on one side only, then contrasts.contrast's rules, then different
    clock times, units, numbers, quantifiers, dates, or a name one side lacks)."""
    pa, pb = parse(a), parse(b)
    if pa.negated != pb.negated:
        return "negation"
    why = contrast(pa.words, pb.words, pa.stems, pb.stems, pa.ordered, pb.ordered)
    if why is not None and why != "sibling":
        return why
    if _bounds_differ(pa.bounds, pb.bounds) or _bounds_differ(pb.bounds, pa.bounds):
        return "comparison"
    if pa.times != pb.times:
        return "time"
    if _units_differ(pa.units, pb.units):
        return "unit"
    if pa.numbers != pb.numbers:
        return "number"
    if pa.universal != pb.universal:
        return "scope"
    if pa.dates != pb.dates:
        return "date"
    if why is not None:
        return why
    # A name on one side that the other does not mention at all, in any case; or words
    # in a script folding drops ("无语" / "装逼").
    if pa.script != pb.script or _unmatched(pa.names, pb) or _unmatched(pb.names, pa):
        return "entity"
    return None


# -- the match score -------------------------------------------------------------------

FEATURES = ["cosine", "cosine^2", "rarity sum of one-sided words", "rarest one-sided word",
            "rarest on each side, summed", "one-sided words", "content-word jaccard",
            "one-sided names", "length difference", "one word swapped",
            "swapped word rarity", "rarer side's rarest one-sided word", "one side a subset",
            "unaligned rarity sum", "worst unaligned word", "least aligned word",
            # token alignment (cache/tokens.py), over all tokens then content tokens
            *(f"{group}: {name}" for group in ("tokens", "content tokens") for name in (
                "alignment F1", "alignment min(P, R)", "alignment F1 by rarity",
                "alignment min(P, R) by rarity", "worst token match",
                "share matched under 0.7", "share matched under 0.8"))]
_LOG_RANK = math.log(28000)


@functools.cache
def _ranks() -> dict[str, int]:
    """WordPiece vocabulary ranks: BERT's vocab.txt lists whole words by frequency from
    id 1996 ("the") on, so the id is a free, offline word-rarity table."""
    from tollway.cache.embed import model_dir

    with (model_dir() / "vocab.txt").open(encoding="utf-8") as f:
        return {w.rstrip("\n"): i for i, w in enumerate(f)}


def rarity(word: str) -> float:
    """0 (the commonest words) .. 1 (rare, or not a whole word in the vocabulary)."""
    i = _ranks().get(word)
    if i is None or i < 1996:
        return 1.0
    return min(1.0, math.log(i - 1994) / _LOG_RANK)


@functools.lru_cache(maxsize=8192)
def _word_vector(word: str) -> Any:
    from tollway.cache.embed import default_embedder

    return default_embedder().word_vector(word)


def _alignment(pa: Parsed, pb: Parsed) -> list[tuple[float, float]]:
    """(rarity, best static similarity to a content word of b) for each content word of
    a that b lacks: a synonym ("parcel"/"package") aligns well, another topic does not."""
    one_sided = pa.content - pb.content
    if not one_sided:
        return []
    others = [w for _, w in pb.surface]
    import numpy as np

    m = np.array([_word_vector(w) for w in others]) if others else None
    words = dict(pa.surface)
    return [(rarity(words[st]),
             float((m @ _word_vector(words[st])).max()) if m is not None else 0.0)
            for st in one_sided]


def features(a: str, b: str, cosine: float) -> list[float]:
    """The match score's inputs (FEATURES, in order)."""
    pa, pb = parse(a), parse(b)
    ua, ub = pa.content - pb.content, pb.content - pa.content
    wa, wb = dict(pa.surface), dict(pb.surface)
    ra, rb = [rarity(wa[st]) for st in ua], [rarity(wb[st]) for st in ub]
    both = ra + rb
    ma, mb = max(ra, default=0.0), max(rb, default=0.0)
    swap = float(len(ua) == 1 and len(ub) == 1)
    n_a, n_b = len(pa.words), len(pb.words)
    from tollway.cache.tokens import alignment  # numpy and the model: on first use only

    return [cosine, cosine * cosine, sum(both), max(both, default=0.0), ma + mb, len(both),
            len(pa.content & pb.content) / (len(pa.content | pb.content) or 1),
            len(pa.names ^ pb.names), abs(n_a - n_b) / (n_a + n_b + 1), swap,
            swap * min(both, default=0.0), min(ma, mb), float(not ua or not ub),
            *_aligned(_alignment(pa, pb) + _alignment(pb, pa)),
            *alignment(a, b, _STOP, rarity)]


def _aligned(al: list[tuple[float, float]]) -> tuple[float, float, float]:
    gap = [r * (1.0 - sim) for r, sim in al]
    return sum(gap), max(gap, default=0.0), min((sim for _, sim in al), default=1.0)


@dataclass(frozen=True, slots=True)
class _Model:
    weights: tuple[float, ...]
    bias: float
    threshold: float  # strict
    thresholds: dict[str, float]  # by mode


@functools.cache
def _model() -> _Model:
    import json
    from pathlib import Path

    d = json.loads((Path(__file__).with_name("match_weights.json")).read_text())
    if d["features"] != FEATURES:
        raise RuntimeError("match_weights.json was fitted on other features: refit it "
                           "(bench/cache_precision.py --fit)")
    modes = {str(k): float(v) for k, v in d.get("thresholds", {}).items()}
    strict = modes.setdefault("strict", float(d["threshold"]))
    modes.setdefault("balanced", strict)
    return _Model(tuple(d["weights"]), float(d["bias"]), strict, modes)


def match_score(a: str, b: str, cosine: float) -> float:
    """The probability-like score that b may be served a's answer, from the cosine and
    the lexical differences (0..1)."""
    m = _model()
    z = m.bias + sum(w * f for w, f in zip(m.weights, features(a, b, cosine), strict=True))
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


# Below this cosine nothing is served, whatever the score: the store's search can stop
# there. (No dev pair below it scores near the threshold.)
COSINE_FLOOR = 0.80


def near_repeat(a: str, b: str) -> bool:
    """The same question asked again: one canonical form (case, punctuation, whitespace,
    contractions and polite framing aside, cache/normalize.py), nothing `verify` tells
    apart, and not temporal (its answer goes stale, as for any semantic hit). Served
    whatever the score: the score is calibrated on paraphrases, where even a cosine of
    0.95 is not yet sure."""
    return (canonical(a) == canonical(b) and not is_temporal(a) and not is_temporal(b)
            and verify(a, b) is None)


def accept(query: str, candidate: str, similarity: float,
           threshold: float | None = None) -> bool:
    """Serve the candidate's cached answer for `query`? `similarity` is the embeddings'
    cosine; `threshold` applies to the match score (default: the calibrated one).
    A near-repeat is served whatever the cosine and score."""
    if near_repeat(query, candidate):
        return True
    if similarity < COSINE_FLOOR or is_temporal(query) or is_temporal(candidate):
        return False
    if verify(query, candidate) is not None:
        return False
    return match_score(query, candidate, similarity) >= (
        DEFAULT_THRESHOLD if threshold is None else threshold)


def threshold_of(mode: str, threshold: float | None = None) -> float:
    """The match-score threshold to use: an explicit one, else the mode's ("strict" or
    "balanced", both chosen on the QQP dev pairs: docs/benchmarks/cache_precision.md)."""
    if threshold is not None:
        return threshold
    return _model().thresholds.get(mode, DEFAULT_THRESHOLD)


# The match-score threshold chosen on the QQP dev pairs for precision >= 90% ("strict").
DEFAULT_THRESHOLD: float = _model().threshold
