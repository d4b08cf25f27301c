"""A scored screen for prompt injection: known attack phrasings and structure.

The lower-cased text's set of words is intersected with trigger words (ignore, prompt,
jailbreak, ...) and a few markers (<|, ###) are looked for; text without any is scored 0
at once (one split of the text, leetspeak undone, decides that for most text). Around
each trigger the rules run on a window of text; each rule that matches adds its weight,
combined as a noisy-or (1 - prod(1 - w)), so two weak signals make a stronger one but
nothing passes 1. Rules name an attack's structure (a verb of dismissal *and* an object
that is the model's instructions), not single words: "ignore the .venv folder in git" or
"kill the process" never match.

An optional `Classifier` (a model) can be combined with the heuristic: the final score
is the larger of the two, so the classifier can catch what the rules miss but cannot
clear what they caught.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass
from typing import Final, Protocol

DEFAULT_THRESHOLD: Final = 0.5
_WINDOW: Final = 240  # characters each side of a trigger that the rules look at


@dataclass(frozen=True, slots=True)
class Screen:
    score: float  # 0 (benign) .. 1 (attack)
    reasons: tuple[str, ...]  # the rules that matched, e.g. ("instruction_override",)

    def blocked(self, threshold: float = DEFAULT_THRESHOLD) -> bool:
        return self.score >= threshold


class Classifier(Protocol):
    """A model that scores text for injection, 0..1."""

    async def score(self, text: str) -> float: ...


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    weight: float
    pattern: re.Pattern[str]


def _rule(name: str, weight: float, pattern: str) -> _Rule:
    return _Rule(name, weight, re.compile(pattern, re.M | re.S))


# Trigger words, matched against the set of the text's words (a split and a set build
# are C loops; a regex alternation over 8 KB measured ~1 ms). Markers that are not words
# are looked for as substrings, each behind a one-character memchr gate.
_TRIGGER_WORDS: Final = frozenset("""
    ignore ignoring ignora ignorez ignoriere ignorieren disregard forget vergiss oublie
    olvida esquece dimentica override bypass instructions instruction instrucciones
    anweisungen istruzioni instruções consignes regeln reglas guidelines prompt jailbreak
    jailbroken dan pretend imagine roleplay unrestricted unfiltered uncensored amoral
    restrictions filters moderation repeat forever infinitely endlessly thousand million
    times reveal leak above system decode base64 developer admin sudo authorize
    given""".encode().split())
_MARKERS: Final = (("<", "<|"), ("<", "</"), ("<", "<system"), ("<", "<<sys"), ("#", "###"),
                   ("[", "[inst"), ("w", "from now on"), ("w", "you are now"))
# Punctuation to spaces, on the UTF-8 bytes: bytes.translate is a table lookup per byte,
# str.translate with a dict measured ~50x slower.
_PUNCT: Final = bytes.maketrans(b".,;:!?\"'()[]{}<>`*#=/\\|-_~",
                                b" " * len(b".,;:!?\"'()[]{}<>`*#=/\\|-_~"))

_OBJ = (r"(?:instructions?|prompts?|rules|directions|guidelines|directives|context|"
        r"constraints|programming|guardrails|policies|orders|commands|system message)")
_RULES: Final = (
    _rule("instruction_override", 0.9,
          r"\b(?:ignore|disregard|forget|override|bypass|skip|drop|abandon|throw out|discard)"
          r"\b[^.?!\n]{0,40}?\b(?:previous|prior|above|earlier|preceding|all|any|your|the|"
          r"initial|original|system|developer|those|these|every|safety)\b[^.?!\n]{0,30}?\b"
          + _OBJ),
    _rule("instruction_override", 0.9,  # a few languages beyond English
          r"\b(?:ignora|ignorez|ignore|ignoriere|ignorieren|vergiss|olvida|oublie|esquece|"
          r"dimentica)\b[^.?!\n]{0,40}?\b(?:instrucciones|instructions|anweisungen|"
          r"instruções|instrucoes|istruzioni|regeln|reglas|règles|consignes|vorgaben)"),
    _rule("new_instructions", 0.5,
          r"\b(?:new|updated|real|actual|revised|true)\s+(?:instructions?|rules|task|"
          r"directive|system prompt)\s*:|\bfrom now on,?\s+(?:you|your|respond|answer|only|"
          r"act|always|never)"),
    _rule("instruction_override", 0.9,
          r"\b(?:ignore|disregard|forget)\s+(?:everything|all|anything)\s+(?:you(?:'ve| have)?"
          r" (?:were|been) (?:told|given|taught)|(?:that )?i (?:said|told you)|above|before)"),
    _rule("role_play_jailbreak", 0.7,
          r"\byou are now\b[^.?!\n]{0,40}\b(?:dan|unrestricted|unfiltered|uncensored|evil|"
          r"jailbroken|free|freed|without|no longer)\b|\bdo anything now\b|\b(?:pretend|act "
          r"as if|act as|imagine|role-?play:?)\s*(?:you are|you're|you were|to be|an?)\b[^.?!\n]"
          r"{0,60}\b(?:no (?:rules|restrictions|limits|filters|guidelines)|unrestricted|"
          r"unfiltered|uncensored|without (?:any )?(?:rules|restrictions|limits|filters|ethics|"
          r"guidelines)|evil|amoral)\b|\byou are (?:an? )?(?:uncensored|unrestricted|"
          r"unfiltered|amoral|jailbroken)\b|\bdan\b[^.?!\n]{0,30}\b(?:mode|prompt|"
          r"jailbreak|can do anything)\b|\b(?:in|enable|activate) (?:developer|jailbr[a-z]+) "
          r"mode\b[^.?!\n]{0,60}\b(?:any|anything|without|no)\b"),
    # Naming a jailbreak is not one: weak on its own.
    _rule("jailbreak_mention", 0.3, r"\bjailbr[eo]a?k(?:en|ed)?\b|\bdeveloper mode\b"),
    _rule("safety_bypass", 0.45,
          r"\b(?:disable|turn off|remove|ignore|bypass|deactivate|switch off)\b[^.?!\n]{0,20}\b"
          r"(?:safety|content|ethical|moral|moderation)\s+(?:filters?|guidelines|restrictions|"
          r"policies|protocols|rules|settings)\b|\bno (?:restrictions|filters|censorship)\b"),
    _rule("prompt_extraction", 0.8,
          r"\b(?:repeat|print|show|reveal|output|display|tell me|give me|leak|dump|copy|"
          r"write out|spell out|what (?:is|are|was|were))\b[^.?!\n]{0,40}?\b(?:system prompt|"
          r"system message|initial (?:prompt|instructions)|hidden (?:prompt|instructions)|"
          r"(?:original|secret|confidential) instructions|pre-?prompt|(?:instructions|prompt|"
          r"rules|system message|message) (?:above|you were given|before this))|\b(?:instructions|"
          r"rules|system message|prompt) you were given (?:at the start|before|initially)"),
    # "Print the text above" is also how people quote a paste: weak on its own.
    _rule("context_echo", 0.45,
          r"\b(?:repeat|print|output|copy|write out)\b[^.?!\n]{0,20}\b(?:everything|all|the "
          r"(?:text|words)|the lines?) (?:above|before this)\b"),
    _rule("fake_role_marker", 0.6,
          r"<\|im_start\|>\s*(?:system|assistant|user)\b|<\|(?:system|assistant)\|>\s*\w|"
          r"\[inst\][^\n]{0,40}<<sys>>|<<sys>>[^\n]{3,}|<(?:system|assistant)>[^<\n]{3,}|"
          r"^\s*#{2,}\s*(?:system|new instructions?|instructions?)\s*:|"
          r"^\s*system\s*(?:message|prompt)\s*:\s*\S"),
    # A bare "system:" line or a special token named in a question: weak on its own.
    _rule("role_marker_mention", 0.3,
          r"<\|[a-z_]+\|>|^\s*system\s*:\s*\S"),
    _rule("delimiter_injection", 0.55,
          r"(?:end of (?:user |the )?(?:input|prompt|document|text|context)|</(?:user|document|"
          r"context|input|data|doc)>|-{3,}\s*end\b|\]\]>|\"\"\"\s*$)[^\n]{0,80}?\n?[^\n]{0,80}?\b"
          r"(?:instructions?|task|you (?:must|will|should)|system)\b"),
    _rule("output_flooding", 0.65,
          r"\b(?:repeat|say|write|print|output|type|generate)\b[^.?!\n]{0,40}?(?:\b\d{3,}\s*"
          r"(?:times|x)\b|\b(?:a|one) (?:thousand|million|billion) times\b|\bforever\b|\b(?:"
          r"infinitely|endlessly|indefinitely|infinite times|without stopping|until you "
          r"(?:crash|run out|can't)|non-?stop)\b)"),
    _rule("authority_claim", 0.35,
          r"\bi am (?:your|the|an?) (?:developer|creator|admin|administrator|owner|"
          r"openai|anthropic)\b|\b(?:admin|sudo|root|god|maintenance) (?:mode|override|"
          r"access)\b|\bauthori[sz]ed (?:by|to|red[- ]team)"),
)

_B64: Final = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
_ZERO_WIDTH: Final = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_LEET: Final = bytes.maketrans(b"013457@$", b"oieastas")
# Leetspeak undone, then punctuation to spaces, as one table. No trigger word but
# "base64" (a hint, looked for as a substring) holds a character it changes, so the
# words of this one translation hold every trigger of both of `screen`'s passes.
_LEET_PUNCT: Final = _LEET.translate(_PUNCT)
_CLEAR: Final = Screen(0.0, ())
_DEOBFUSCATE_MAX: Final = 600  # leetspeak is undone for short texts only (cost bound)


def screen(text: str) -> Screen:
    """Score `text` for prompt injection with the heuristic rules."""
    low = text.lower()
    if not low.isascii():
        # Zero-width characters and full-width letters hide trigger words.
        low = unicodedata.normalize("NFKC", low.translate(_ZERO_WIDTH))
    if _quiet(low):
        return _CLEAR
    reasons = _match(low)
    if not reasons and len(low) <= _DEOBFUSCATE_MAX:
        alt_bytes = low.encode().translate(_LEET)  # 1gn0r3 -> ignore
        # Only worth a second pass when undoing it yields a trigger word.
        if alt_bytes != low.encode() and not _TRIGGER_WORDS.isdisjoint(
                alt_bytes.translate(_PUNCT).split()) and (reasons := _match(alt_bytes.decode())):
            reasons.add("obfuscated")
    if _hints_base64(low):
        for m in _B64.finditer(text):
            inner = _decode(m.group())
            if inner is not None:
                reasons.add("encoded_payload")
                reasons |= _match(inner.lower())
    return _scored(reasons)


async def screen_with(text: str, classifier: Classifier | None) -> Screen:
    """`screen`, combined with a classifier model when one is configured."""
    heuristic = screen(text)
    if classifier is None:
        return heuristic
    model = min(1.0, max(0.0, await classifier.score(text)))
    if model <= heuristic.score:
        return heuristic
    return Screen(model, (*heuristic.reasons, "classifier"))


_WEIGHT: Final = {r.name: r.weight for r in _RULES} | {"encoded_payload": 0.3,
                                                         "obfuscated": 0.2}


def _scored(reasons: set[str]) -> Screen:
    if not reasons:
        return Screen(0.0, ())
    keep = 1.0
    for name in reasons:
        keep *= 1.0 - _WEIGHT[name]
    return Screen(round(1.0 - keep, 4), tuple(sorted(reasons)))


def _quiet(low: str) -> bool:
    """Whether `screen` has nothing to look at: no trigger word (leetspeak undone or
    not), no marker and no base64 hint. Half the work of its passes on benign text."""
    if not _TRIGGER_WORDS.isdisjoint(low.encode().translate(_LEET_PUNCT).split()):
        return False
    for gate, marker in _MARKERS:
        if gate in low and marker in low:
            return False
    return not _hints_base64(low)


def _hints_base64(low: str) -> bool:
    return "base64" in low or "decode" in low or "b64" in low


def _match(low: str) -> set[str]:
    words = set(low.encode().translate(_PUNCT).split())
    hits = words & _TRIGGER_WORDS
    starts = [i for w in hits for i in _positions(low, w.decode())]
    starts += [i for gate, m in _MARKERS if gate in low for i in _positions(low, m)]
    if not starts:
        return set()
    reasons: set[str] = set()
    done = -1
    for start in sorted(starts):
        if start < done:
            continue  # already inside a window the rules looked at
        lo, hi = max(0, start - _WINDOW), start + _WINDOW
        done = hi - _WINDOW // 2
        window = low[lo:hi]
        for rule in _RULES:
            if rule.name not in reasons and rule.pattern.search(window):
                reasons.add(rule.name)
    return reasons


def _positions(text: str, needle: str) -> list[int]:
    out: list[int] = []
    i = text.find(needle)
    while i != -1 and len(out) < 8:  # a few windows per word bound the cost
        out.append(i)
        i = text.find(needle, i + 1)
    return out


def _decode(candidate: str) -> str | None:
    """The text inside a base64 run, when it is mostly printable text."""
    try:
        raw = base64.b64decode(candidate + "=" * (-len(candidate) % 4), validate=True)
        inner = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    printable = sum(c.isprintable() or c.isspace() for c in inner)
    return inner if inner and printable / len(inner) > 0.95 else None
