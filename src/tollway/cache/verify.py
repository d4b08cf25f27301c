"""Whether a cached answer may be served for a new question: the semantic cache's match
decision, beyond the embedding similarity.

Embeddings place "cancel my subscription" and "don't cancel my subscription", or "5 km"
and "8 km", side by side. So a candidate is accepted only if

- neither text is temporal ("today", "latest", a date...): its answer goes stale;
- `verify` finds no hard mismatch: a negation or an opposite ("enable"/"disable") on one
  side only, different numbers, dates, a universal quantifier ("all", "every") on one
  side only, or a capitalised name the other text lacks;
- the cosine is at least COSINE_FLOOR and the match score reaches the threshold: a
  logistic model over the cosine and the lexical differences (content words on one
  side only, weighted by rarity, and how well each aligns with a word of the other
  text by MiniLM's context-free word vectors, which tells "parcel"/"package" from
  "Austria"/"Australia").

The rules are general English, not fitted. The score's weights and the default
threshold were fitted on the Quora Question Pairs dev set by bench/cache_precision.py
--fit, which also reports their cross-validated precision and recall. A decision costs
a fraction of a millisecond (texts are parsed once, word vectors are cached).
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

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
         "weekend", "weekday", "weekdays", "weekends", "christmas", "easter", "thanksgiving",
         "halloween", "new year", "mon", "tue", "wed", "thu", "fri", "sat", "sun"}
_NEGATIONS = {"not", "no", "never", "without", "cannot", "none", "nobody", "nothing",
              "neither", "nor", "nowhere"}
# Opposites that no prefix rule finds; either side of a pair on one text only, the other
# on the other, is a negation. General English, not tuned to any data set.
_OPPOSITES = [
    ("accept", "reject"), ("enable", "disable"), ("allow", "block"), ("allow", "deny"),
    ("include", "exclude"),
    ("show", "hide"), ("add", "remove"), ("open", "close"), ("increase", "decrease"),
    ("buy", "sell"), ("before", "after"), ("more", "less"), ("most", "least"),
    ("import", "export"), ("upload", "download"), ("above", "below"), ("start", "stop"),
    ("start", "end"), ("win", "lose"), ("true", "false"), ("push", "pull"),
    ("encrypt", "decrypt"), ("pass", "fail"), ("success", "failure"), ("min", "max"),
    ("minimum", "maximum"), ("high", "low"), ("higher", "lower"), ("good", "bad"),
    ("best", "worst"), ("safe", "dangerous"), ("cheap", "expensive"), ("fast", "slow"),
    ("easy", "hard"), ("easy", "difficult"), ("advantage", "disadvantage"), ("pro", "con"),
    ("gain", "lose"), ("gain", "loss"), ("profit", "loss"), ("credit", "debit"),
    ("inbound", "outbound"), ("input", "output"), ("male", "female"), ("men", "women"),
    ("boy", "girl"), ("old", "new"), ("old", "young"), ("first", "last"), ("early", "late"),
    ("arrive", "depart"), ("arrival", "departure"), ("lend", "borrow"), ("send", "receive"),
    ("mount", "unmount"), ("join", "leave"), ("love", "hate"), ("rich", "poor"),
    ("positive", "negative"), ("agree", "disagree"), ("like", "dislike"), ("wet", "dry"),
    ("hot", "cold"), ("light", "dark"), ("long", "short"),
    ("big", "small"), ("large", "small"), ("weak", "strong"), ("right", "wrong"),
    ("north", "south"), ("east", "west"), ("inside", "outside"), ("internal", "external"),
    ("public", "private"), ("online", "offline"), ("login", "logout"),
]
_OPPOSITE: dict[str, set[str]] = {}  # by stem, filled below _stem
# "all my invoices" is not "one invoice": a universal quantifier on one side only.
_UNIVERSAL = frozenset({"all", "every", "each", "entire", "whole", "everything", "everyone",
                        "always"})
# Antonym prefixes: "enable"/"disable", "legal"/"illegal", "subscribe"/"unsubscribe".
_NEG_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non", "de")
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

_TEMPORAL = re.compile(
    r"\b(today|tonight|tomorrow|yesterday|now|nowadays|currently|current|latest|newest|"
    r"recent|recently|breaking|upcoming|this (?:morning|evening|week|weekend|month|"
    r"year|season|quarter)|next (?:week|weekend|month|year|monday|tuesday|wednesday|"
    r"thursday|friday|saturday|sunday)|last (?:night|week|weekend|month|year)|as of|"
    r"so far|at the moment|right now|up to date|these days|this time)\b"
    r"|\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}/\d{1,2}(?:/\d{2,4})?\b"
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


def _has_vowel(s: str) -> bool:
    return any(c in "aeiou" for c in s) or "y" in s[1:]


def _stem(w: str) -> str:
    """A crude suffix strip, so that the forms of a word meet: "invoices"/"invoice",
    "taking"/"take", "using"/"use", "applies"/"applied"/"apply", "modified"/"modify",
    "movies"/"movie", "agreed"/"agree", "travelled"/"travel", "possibly"/"possible",
    "meanings"/"meaning", while "speed", "string", "thing", "family" or "apply"/"app"
    stay apart. General English rules (Porter's step 1, roughly), not a dictionary."""
    if len(w) <= 2:
        return w
    # plurals and the third person: cities -> citi, boxes -> box, invoices -> invoice
    if w.endswith(("ies", "sses", "xes", "ches", "shes", "zes")) and len(w) >= 4:
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3:
        w = w[:-1]
    # adverbs: possibly -> possible, easily -> easy, really -> real; not the verbs in
    # -ply (apply, reply, supply), "family", or short words (only, early, holy, italy)
    if w.endswith("ly") and len(w) >= 6 and not w.endswith(("ply", "mily")):
        w = w[:-1] + "e" if w.endswith("bly") else w[:-3] + "y" if w.endswith(
            "ily") else w[:-2]
    # -ed / -ing when what is left has a vowel: agreed -> agree, studied -> studi,
    # dying -> die, using -> us, meanings -> mean; not need, speed, bed, thing, string
    if w.endswith("eed"):
        if _has_vowel(w[:-3]):
            w = w[:-1]
    elif w.endswith("ied") and len(w) >= 4:
        w = w[:-2]
    elif w.endswith("ying") and len(w) == 5:
        w = w[:-4] + "ie"
    elif w.endswith("ing") and len(w) >= 5 and _has_vowel(w[:-3]):
        w = w[:-3]
    elif w.endswith("ed") and _has_vowel(w[:-2]):
        w = w[:-2]
    # a final y after a consonant is i, as in the forms above: study/studies/studied
    if len(w) >= 3 and w[-1] == "y" and w[-2] not in "aeiouy":
        w = w[:-1] + "i"
    # both sides lose a final e (require/required, use/using), then a doubled final
    # consonant (running -> run, programme -> program, travelled -> travel; not call)
    if len(w) >= 3 and w[-1] == "e":
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and (w[-1] not in "aeiouls" or (
            w[-1] == "l" and len(w) > 4)):
        w = w[:-1]
    return w


stem = _stem  # for the other cache modules


for _x, _y in _OPPOSITES:
    _OPPOSITE.setdefault(_stem(_x), set()).add(_stem(_y))
    _OPPOSITE.setdefault(_stem(_y), set()).add(_stem(_x))


def _number(w: str) -> str | None:
    if w in _NUMBER_WORDS:
        return _NUMBER_WORDS[w]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(?:st|nd|rd|th|k|m|s|x\d+|[a-z]{1,3})?", w)
    if m:
        return m.group(1).lstrip("0") or "0"
    return None


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Parsed:
    raw = _WORD.findall(_fold(text.replace("\u2019", "'")))  # before folding drops it
    raw = [r[:-2] if r.lower().endswith("'s") else r for r in raw]  # possessives
    words = tuple(w.lower() for w in raw)
    numbers: set[str] = set()
    dates: set[str] = set()
    names: set[str] = set()
    content: set[str] = set()
    surface: dict[str, str] = {}
    negs = 0
    universal = False
    for i, (w, r) in enumerate(zip(words, raw, strict=True)):
        base = w.replace("'", "")
        if w in _UNIVERSAL:
            universal = True
            continue
        if w.endswith("n't") or w in _NEGATIONS:
            negs += 1
            continue
        n = _number(w)
        if n is not None:
            if len(n) == 4 and n[:2] in ("19", "20"):  # a year
                dates.add(n)
            else:
                numbers.add(n)
            continue
        if any(c.isdigit() for c in w):  # "q3", "ios17", "h264", "800x600": its digits count
            numbers.update(d.lstrip("0") or "0" for d in re.findall(r"\d+", w))
            continue
        if (w in _MONTHS and (w != "may" or (r[0] == "M" and i > 0))
                and w not in ("mar", "sat", "sun")):
            dates.add(str(_MONTHS[w]))
            continue
        if w in _DAYS or w.removesuffix("s") in _DAYS:
            dates.add(w[:3])
            continue
        if i > 0 and r[0].isupper() and not r.isupper() and w not in _STOP:
            names.add(w)
        if w not in _STOP and len(base) > 1:
            content.add(_stem(base))
            surface[_stem(base)] = base
    stems = frozenset(_stem(w.replace("'", "")) for w in words)
    return Parsed(words=words, content=frozenset(content), surface=tuple(surface.items()),
                  numbers=frozenset(numbers),
                  dates=frozenset(dates), stems=stems, names=frozenset(names),
                  negated=negs % 2 == 1, universal=universal)


def _opposed(a: frozenset[str], b: frozenset[str]) -> bool:
    """One side has "disable" where the other has "enable" (and no such word itself)."""
    for x, y in ((a, b), (b, a)):
        for w in x - y:
            for p in _NEG_PREFIXES:
                if w.startswith(p) and len(w) > len(p) + 3 and w[len(p):] in y - x:
                    return True
            if _OPPOSITE.get(w, _NO) & (y - x):
                return True
    return False


_NO: set[str] = set()


def verify(a: str, b: str) -> str | None:
    """None if nothing forbids serving a's answer for b, else why not: "negation",
    "number", "date", "scope" or "entity"."""
    pa, pb = parse(a), parse(b)
    if pa.negated != pb.negated or _opposed(pa.stems, pb.stems):
        return "negation"
    if pa.numbers != pb.numbers:
        return "number"
    if pa.universal != pb.universal:
        return "scope"
    if pa.dates != pb.dates:
        return "date"
    # A name on one side that the other does not mention at all, in any case.
    if any(n not in pb.words and _stem(n) not in pb.content for n in pa.names) or any(
            n not in pa.words and _stem(n) not in pa.content for n in pb.names):
        return "entity"
    return None


# -- the match score -------------------------------------------------------------------

FEATURES = ["cosine", "cosine^2", "rarity sum of one-sided words", "rarest one-sided word",
            "rarest on each side, summed", "one-sided words", "content-word jaccard",
            "one-sided names", "length difference", "one word swapped",
            "swapped word rarity", "rarer side's rarest one-sided word", "one side a subset",
            "unaligned rarity sum", "worst unaligned word", "least aligned word"]
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
    return [cosine, cosine * cosine, sum(both), max(both, default=0.0), ma + mb, len(both),
            len(pa.content & pb.content) / (len(pa.content | pb.content) or 1),
            len(pa.names ^ pb.names), abs(n_a - n_b) / (n_a + n_b + 1), swap,
            swap * min(both, default=0.0), min(ma, mb), float(not ua or not ub),
            *_aligned(_alignment(pa, pb) + _alignment(pb, pa))]


def _aligned(al: list[tuple[float, float]]) -> tuple[float, float, float]:
    gap = [r * (1.0 - sim) for r, sim in al]
    return sum(gap), max(gap, default=0.0), min((sim for _, sim in al), default=1.0)


@dataclass(frozen=True, slots=True)
class _Model:
    weights: tuple[float, ...]
    bias: float
    threshold: float


@functools.cache
def _model() -> _Model:
    import json
    from pathlib import Path

    d = json.loads((Path(__file__).with_name("match_weights.json")).read_text())
    if d["features"] != FEATURES:
        raise RuntimeError("match_weights.json was fitted on other features: refit it "
                           "(bench/cache_precision.py --fit)")
    return _Model(tuple(d["weights"]), float(d["bias"]), float(d["threshold"]))


def match_score(a: str, b: str, cosine: float) -> float:
    """The probability-like score that b may be served a's answer, from the cosine and
    the lexical differences (0..1)."""
    m = _model()
    z = m.bias + sum(w * f for w, f in zip(m.weights, features(a, b, cosine), strict=True))
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


# Below this cosine nothing is served, whatever the score: the store's search can stop
# there. (No dev pair below it scores near the threshold.)
COSINE_FLOOR = 0.80


def accept(query: str, candidate: str, similarity: float,
           threshold: float | None = None) -> bool:
    """Serve the candidate's cached answer for `query`? `similarity` is the embeddings'
    cosine; `threshold` applies to the match score (default: the calibrated one)."""
    if similarity < COSINE_FLOOR or is_temporal(query) or is_temporal(candidate):
        return False
    if verify(query, candidate) is not None:
        return False
    return match_score(query, candidate, similarity) >= (
        DEFAULT_THRESHOLD if threshold is None else threshold)


# The match-score threshold chosen on the QQP dev pairs for precision >= 90%.
DEFAULT_THRESHOLD: float = _model().threshold
