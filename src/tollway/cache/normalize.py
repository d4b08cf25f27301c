"""The canonical form of a question: what is left when the parts that never change its
meaning are taken away, so that a near-repeat is found without the model.

"What is the tallest mountain in the world?", "what is the tallest mountain in the
world", "Tell me the tallest mountain in the world" and "Can you please tell me: what's
the tallest mountain in the world??" all become "the tallest mountain in the world".
Removed: case, accents, punctuation at word edges, repeated whitespace, contractions
(expanded: "don't" -> "do not", so a negation stays a word), and polite or filler
framing at either end ("please", "tell me", "can you explain", "thanks"). Kept:
everything inside a word ("9:30", "1/4", "c++", "£50", "38°c"), so numbers, times and
symbols still differ.

Two texts with the same canonical form are the same request: the semantic cache
serves one's answer for the other whenever verification finds nothing that differs
in meaning (cache/verify.py), without needing the match score.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# Expanded so that the meaning-bearing word ("not", "is") is there to compare.
_CONTRACTIONS = {
    "can't": "cannot", "won't": "will not", "shan't": "shall not", "ain't": "is not",
    "let's": "let us", "what's": "what is", "who's": "who is", "where's": "where is",
    "when's": "when is", "how's": "how is", "why's": "why is", "that's": "that is",
    "there's": "there is", "here's": "here is", "it's": "it is", "he's": "he is",
    "she's": "she is", "i'm": "i am", "y'all": "you all", "whats": "what is",
    "hows": "how is", "im": "i am", "dont": "do not", "doesnt": "does not",
    "cant": "cannot", "isnt": "is not", "wont": "will not", "didnt": "did not",
    "can not": "cannot", "gonna": "going to", "wanna": "want to",
}
_SUFFIX_CONTRACTIONS = (("n't", " not"), ("'re", " are"), ("'ve", " have"),
                        ("'ll", " will"), ("'d", " would"))

# Framing that asks politely without adding to the question, at the start (several may
# stack: "hi! could you please tell me ...") or at the end.
_LEAD = re.compile(
    r"^(?:(?:hi|hey|hello|ok|okay|so|um|uh|please|kindly|excuse me|sorry|quick question|"
    r"question|just curious|i have a question|one more thing)\b[\s,:;!.-]*"
    r"|(?:(?:can|could|would|will) you(?: please| kindly)? )?(?:please )?"
    r"(?:tell me|let me know|explain(?: to me)?|help me understand|remind me|"
    r"say)\b[\s,:;!.-]*"
    r"|(?:do|does) (?:you|anyone|anybody) know\b[\s,:;!.-]*"
    r"|i(?: would|'d| d) like to know\b[\s,:;!.-]*|i want to know\b[\s,:;!.-]*"
    r"|i (?:am|was) wondering\b[\s,:;!.-]*|i wonder\b[\s,:;!.-]*"
    r"|(?:any ?one|someone|somebody) (?:please )?(?:tell me|explain)\b[\s,:;!.-]*)")
_TRAIL = re.compile(
    r"(?:[\s,;:!.-]+(?:please|pls|plz|thanks|thank you|thx|ty|cheers|"
    r"thanks in advance|thank you in advance|if you can|if possible))+$")
# "what is the X" asks for the X: "tell me the X" once framing is gone.
_WHAT_THE = re.compile(r"^(?:what is|what are|which is|which are|name) (the )")
# Punctuation at the edge of a word; inside one ("9:30", "1/4", "e.g") it stays.
_EDGE = re.compile(r"(?:(?<=\s)|^)[^\w£$€¥#@+%°]+|[^\w£$€¥#@+%°]+(?=\s|$)")
# A hyphen joining words ("non-refundable", "full-time") is a space: written either way.
_HYPHEN = re.compile(r"(?<=[a-z])-(?=[a-z])")


def _fold(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


def expand_contractions(low: str) -> str:
    """Contractions in lower-case text, written out ("don't" -> "do not")."""
    words = low.split(" ")
    out = []
    for w in words:
        core = w.strip("?!.,;:\"()")
        if core in _CONTRACTIONS:
            out.append(w.replace(core, _CONTRACTIONS[core]))
            continue
        for suf, full in _SUFFIX_CONTRACTIONS:
            if core.endswith(suf) and len(core) > len(suf):
                out.append(w.replace(core, core[:-len(suf)] + full))
                break
        else:
            out.append(w)
    return " ".join(out).replace("can not", "cannot")


@functools.lru_cache(maxsize=8192)
def canonical(text: str) -> str:
    """The canonical form of `text` (see the module's docstring)."""
    low = " ".join(_fold(text).lower().split())
    low = expand_contractions(low)
    low = _HYPHEN.sub(" ", low)
    low = " ".join(_EDGE.sub(" ", low).split())
    low = low.replace(" please ", " ")
    for _ in range(4):  # framing stacks: "hi, could you please tell me ..."
        before = low
        low = _LEAD.sub("", low).strip()
        low = _TRAIL.sub("", low).strip()
        if low == before:
            break
    low = _WHAT_THE.sub(r"\1", low)
    return low or " ".join(_fold(text).lower().split())
