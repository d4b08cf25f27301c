"""Words: the crude stemmer the cache's checks compare words by."""

from __future__ import annotations


def _has_vowel(s: str) -> bool:
    return any(c in "aeiou" for c in s) or "y" in s[1:]


def stem(w: str) -> str:
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
