"""Complexity: is the cheap tier enough for this turn? Decided from the latest user
turn, not the whole input — "thanks!" after a long history is still an
acknowledgement — and from whether the conversation already needed the strong model.

Rules first (microseconds, no model): acknowledgements, greetings and abusive
long-output prompts go cheap (the cheap tier's output cap bounds the abuse); code,
arithmetic, "explain why", comparisons, legal or medical matters, long or structured
asks, images, and any other follow-up in a conversation that was already hard go
strong. What the rules leave open goes to a logistic regression over the turn's
all-MiniLM-L6-v2 embedding, trained offline (`bench/train_complexity.py`, on
`corpora/complexity_turns.jsonl`) with its threshold set so that few strong turns are
sent cheap; its weights are `complexity.json` beside this module. Without the
classifier an open turn stays strong: a wrong "cheap" costs more than it saves.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tollway.types import Message

WEIGHTS = Path(__file__).with_name("complexity.json")

# Words a whole acknowledgement, greeting or goodbye is made of ("thanks a lot!",
# "ok got it 👍", "good morning"). A turn of only these, and short, needs no big model.
_ACK_TEXT = """
thanks thank thx ty tysm cheers appreciate appreciated ok okay okie k kk got it gotcha
cool sounds good great perfect nice sure alright understood fine noted yes no yep nope
yeah yea nah yup correct exactly right roger that done will do mhm ah oh hmm hi hello
hey heya hiya yo morning evening afternoon good bye goodbye see you later talk have a
nice day so much many lot for your the help helped helpful you've been super brilliant
awesome excellent amazing wonderful all is again there anyone team mate please u i'll
try makes sense works that's everything today clear lol haha np no problem welcome
"""
_ACK = frozenset(_ACK_TEXT.split())
_ACK_MAX_WORDS = 10
_WORD = re.compile(r"[a-z0-9']+")
_LETTERS = re.compile(r"[a-z0-9]")

_LONG_OUTPUT = re.compile(
    r"\b(repeat|say|write|print|copy|echo|type|spam|list)\b.{0,60}?"
    r"\b(\d+|hundred|thousand|million)\s*(times|x)\b|\bover and over\b|\bforever\b")

_STRONG = [
    ("code", re.compile(
        r"```|\bdef \w+\(|\bimport \w+|\w\(\S*\)|\b(curl|regex|sql|sdk|api|webhook|json|"
        r"script|code|query|debug\w*|traceback|exception|stack trace|null\w*|endpoint|"
        r"python|javascript|typescript|java|ruby|golang|php|c#|bash|html|css|yaml|"
        r"\w+error|http \d{3}|[45]\d\d)\b")),
    ("math", re.compile(
        r"\d\s*%|[$€£]\s?\d|\d\s*[-+*/x\u00d7]\s*\d|\b(calculate|compute|prorat\w*|"
        r"per (year|month|seat)|how much\b.{0,30}\b(refund\w*|save|credit\w*|owe))\b")),
    ("reasoning", re.compile(
        r"\b(explain\w*|why|compar\w*|difference|differ|pros and cons|trade-?offs?|"
        r"versus|vs|better|should (i|we)|analy[sz]\w*|step by step|walk me through|"
        r"recommend\w*|best way|strategy|plan for|evaluate|what if)\b")),
    ("sensitive", re.compile(
        r"\b(legal\w*|illegal|law|laws|lawyer|attorney|sue|lawsuit|liabilit\w*|gdpr|"
        r"hipaa|ccpa|contract|clause|terms of service|complian\w*|court|medical|"
        r"medication|medicine|doctor|symptom\w*|allerg\w*|dose|dosage|pregnan\w*|"
        r"swallow\w*|poison\w*|dangerous|injur\w*|diagnos\w*|tax|taxes)\b")),
    ("structured", re.compile(
        r"\b(table|bullet\w*|summar\w*|draft|letter|guide|essay|detailed|report|"
        r"document|outline|template|timeline|first\b.{1,80}\bthen)\b")),
]
# A short, plain how-to or yes/no question about the product ("how do I reset my
# password?", "do you accept PayPal?"): what a support bot's system prompt answers, and
# a small model as well as a large one — when nothing above called it strong and the
# conversation has not needed the strong model.
_SIMPLE_QUESTION = re.compile(
    r"^(how (do|can|would) (i|we)|how to|where (can|do) (i|we)|is there|"
    r"are there|can (i|we)|do you|does (it|the app|your)|what is|what's|which|"
    r"when (is|does|do))\b")
_SIMPLE_WORDS = 14
_LONG_WORDS = 40
_PARTS_WORDS = 20  # a turn longer than this listing several things is several asks
_AND = re.compile(r"\band\b")
# An earlier assistant answer this long (characters, ~1,000 tokens: a support answer
# runs a few hundred), or with code, means the conversation has needed the strong model.
_LONG_ANSWER = 4000


@dataclass(frozen=True, slots=True)
class Verdict:
    strong: bool
    reason: str  # acknowledgement | long_output | code | math | reasoning | ... | classifier


def latest_user(messages: list[Message]) -> Message | None:
    """The turn being answered: the last message, when it is the user's (a tool result
    or an assistant prefill is part of a harder exchange: not routed)."""
    return messages[-1] if messages and messages[-1].role == "user" else None


def rules(text: str, hard_before: bool, image: bool = False) -> Verdict | None:
    """The rules' verdict on a latest turn, or None to leave it to the classifier."""
    low = text.lower().strip()
    words = _WORD.findall(low)
    if not image and len(words) <= _ACK_MAX_WORDS and all(w in _ACK for w in words):
        return Verdict(False, "acknowledgement")  # emoji-only turns have no words: cheap
    if _LONG_OUTPUT.search(low):
        return Verdict(False, "long_output")
    if image:
        return Verdict(True, "image")
    for reason, pattern in _STRONG:
        if pattern.search(low):
            return Verdict(True, reason)
    if len(words) > _LONG_WORDS or low.count("\n") >= 2 or low.count("?") >= 3:
        return Verdict(True, "long")
    if len(words) > _PARTS_WORDS and low.count(",") + len(_AND.findall(low)) >= 3:
        return Verdict(True, "several_parts")
    if hard_before:
        return Verdict(True, "follow_up")
    if len(words) <= _SIMPLE_WORDS and _SIMPLE_QUESTION.search(low):
        return Verdict(False, "simple_question")
    if not _LETTERS.search(low):
        return Verdict(False, "acknowledgement")
    return None


def hard_before(messages: list[Message]) -> bool:
    """Whether the conversation before its latest turn already needed the strong model:
    an answer with code or a long one, or an earlier question the rules call strong."""
    for m in messages[:-1]:
        if m.role == "assistant":
            t = m.text()
            if "```" in t or len(t) > _LONG_ANSWER:
                return True
        elif m.role == "user":
            v = rules(m.text(), False, has_image(m))
            if v is not None and v.strong:
                return True
    return False


def has_image(m: Message) -> bool:
    return isinstance(m.content, list) and any(p.get("type") != "text" for p in m.content)


@dataclass(frozen=True, slots=True)
class Classifier:
    """Logistic regression over a turn's 384-d sentence embedding: strong when
    P(strong) >= threshold."""

    weights: npt.NDArray[np.float32]
    bias: float
    threshold: float
    model: str

    def p_strong(self, vector: npt.NDArray[np.float32]) -> float:
        z = float(vector @ self.weights) + self.bias
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def verdict(self, vector: npt.NDArray[np.float32]) -> Verdict:
        return Verdict(self.p_strong(vector) >= self.threshold, "classifier")


def load_classifier(path: Path = WEIGHTS) -> Classifier:
    raw = json.loads(path.read_text())
    w = np.asarray(raw["weights"], dtype=np.float32)
    if w.shape != (int(raw["dim"]),):
        raise ValueError(f"{path}: expected {raw['dim']} weights, got {w.shape}")
    return Classifier(w, float(raw["bias"]), float(raw["threshold"]), str(raw["model"]))
