"""Whether the latest user turn stands alone: the same words would get the same right
answer at the start of any conversation, so its answer may be shared across
conversations (`cache.across_conversations`).

Rules only, no model: deterministic, a few microseconds, and conservative: anything
that might lean on the earlier turns means it depends on them. A turn depends on
context when

- it is a fragment: under four words ("why?", "more", "the second one"), or it opens
  as a continuation ("and ...", "what about ...", "same for ...", "for business
  accounts?") or as an answer ("yes", "ok", "sure");
- it points back: a pronoun or demonstrative ("it", "that", "they", "her", "there"
  used as a place), an ordinal or a choice ("the first", "which one", "the other"), a
  discourse word ("again", "instead", "also", "else", "same", "still"), a reference to
  what was said ("you mentioned", "your answer", "the steps", "step 2");
- it answers the assistant's question (the last assistant turn asked one) without
  being a question itself;
- its answer hinges on the situation the user described: a yes/no question about
  themselves ("can I get a refund?", "is my card blocked?"); "my X" / "the X" where X
  was talked about earlier ("where is my order?" after giving its number); or, once the
  user has stated something about themselves, any question not in a generic form (how
  to do something, whether something exists, what the business offers): "how long will
  delivery take?" after "I live in Canada".

Pronouns that point nowhere are allowed: "is it possible to ...", "how long does it
take to ...", "is there a ...". I, me, my, you and your are the two speakers, not
references back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tollway.cache.words import stem
from tollway.types import Message

MIN_WORDS = 4

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

# Opening words that continue or answer the previous turn.
_OPENERS = frozenset("""
and but or so also then plus too same ok okay yes yeah yep yup no nope nah sure right
correct exactly great cool thanks thank perfect fine alright hmm hm well oh ah because
since although though for with without from about via in on at by to into
instead again more another other else both either neither only just not
""".split())  # noqa: SIM905
_OPENING_PHRASES = re.compile(
    r"^(what about|how about|what if|what else|why not|why is that|why so|how so|"
    r"tell me more|go on|and if|even if|as for|in that case|if so|if not|"
    r"same (?:for|with|question)|what do you mean|you said|you mentioned|"
    r"in the (?:first|second|third|last|previous) )")
# Words that point back wherever they stand.
_BACK = frozenset("""
it its itself that this these those they them their theirs themselves he him his
himself she her hers herself former latter above aforementioned said mentioned told
suggested recommended wrote listed described explained showed shown previous
previously earlier again instead also too else same similar such still anymore either
neither both rest remaining ones here there then another other others afterwards now
next
""".split())  # noqa: SIM905
# "it" / "there" / "that" in constructions that point nowhere.
_ADJ = (r"(?:possible|necessary|safe|ok|okay|free|required|allowed|mandatory|normal|"
        r"legal|worth it|too late|too early|cheaper|better|faster|easier|hard|difficult)")
_DUMMY = re.compile(  # "it" before a "to" clause: "is it possible to ...", not "is it free?"
    rf"\b(?:is|was|will|would|could|can) it (?:be )?{_ADJ} (?:for \w+ )?to\b"
    rf"|\bit (?:is|'s|was) {_ADJ} (?:for \w+ )?to\b"
    r"|\b(?:does|will|would|did) it (?:take|cost) (?:\w+ )?to\b"
    r"|\b(?:is|are|was|were|will|would|could|can) there\b"
    r"|\bthere (?:is|are|was|were|'s|will|would|could|can|should|must|might|may)\b"
    r"|\bmake sure that\b|\bso that\b")
# "one" as a choice: "the second one", "which one", "this one", "the cheaper one".
_CHOICE = re.compile(
    r"\b(?:the|which|this|that|other|another|first|second|third|last|next|same|cheaper|"
    r"better|bigger|smaller|new|old|blue|red|green|black|white|each|either|any) ones?\b"
    r"|\bthe (?:first|second|third|fourth|fifth|last|latter|former|next|previous|"
    r"following|above|below|latest|original|rest|remaining|other)\b"
    r"|\b(?:step|option|point|number|item|answer|choice|link|method|solution|plan) "
    r"(?:#\s*)?\d+\b|#\s*\d+\b"
    r"|\b(?:tell me|explain|say|give me|show me|describe) (?:a bit |a little )?more\b"
    r"|\bmore (?:about|detail|details|info|information|examples?|options|like|please)\b"
    r"|\b(?:any|one|some|no) more\b"
    r"|\b(?:elaborate|clarify|rephrase|summari[sz]e|shorten|expand|translate|repeat|"
    r"simplify|continue)\b")
# Nouns for what the assistant just wrote: "the link", "your answer".
_DISCOURSE = frozenset("""
link links step steps code command commands list example examples answer answers reply
replies response responses suggestion suggestions option options instructions method
methods solution solutions approach article articles text message messages table
summary script snippet result results explanation advice error errors output version
""".split())  # noqa: SIM905
# A yes/no question about the asker's own case: its answer depends on what they told.
_PERSONAL_YES_NO = re.compile(
    r"^(?:(?:can|could|may|should|shall|will|would|must|do|did|does|am|was|have|has|is|"
    r"are|were) (?:i|we|my|our|me|us)\b|(?:is|are|was|were|has|have|does|did|do) "
    r"(?:my|our|this|that|these|those)\b)")
_QUESTION_WORDS = frozenset("""
how what where when why who whom which whose can could do does did is are was were
will would should shall may might have has am please
""".split())  # noqa: SIM905
# Once the user has told something about themselves ("I live in Canada", "my card is a
# Visa"), only a question in a generic form stands alone: how to do something, whether
# something exists, what the business offers. "How long will delivery take?" does not.
_FACT = re.compile(r"\b(?:i|i'm|i've|i'd|i'll|my|we|we're|we've|our|mine)\b")
_GENERIC = re.compile(
    r"^(?:how (?:do|can|could|should|would) (?:i|we|you|one) \w+"
    r"|where (?:do|can|could|should) (?:i|we) \w+|(?:is|are) there\b"
    r"|(?:do|does|can|will|would|could) (?:you|your)\b|what (?:is|are|'s) your\b"
    r"|(?:which|what) \w+(?: \w+)? (?:do|does|can|will) (?:you|your)\b|how does your\b"
    r"|is it possible to\b|what(?: is|'s) the (?:difference|best way)\b)")
_POSSESSED = re.compile(r"\b(?:my|our|the|your) ([a-z]+)")
_SITUATED = re.compile(r"\b(my|our|the) ([a-z]+)")  # not "your": the assistant's side


def depends_reason(text: str, earlier: Sequence[Message]) -> str | None:
    """Why the latest user turn `text` depends on the earlier turns `earlier` (every
    message before it, system prompt included), or None when it stands alone."""
    low = text.lower().replace("\u2019", "'").strip()
    words = _WORD.findall(low)
    if not words:
        return "fragment"
    if words[0] in _OPENERS or _OPENING_PHRASES.match(low):
        return "continuation"
    masked = _DUMMY.sub(" ", low)
    if any(w in _BACK for w in _WORD.findall(masked)):
        return "reference"
    if _CHOICE.search(low):
        return "reference"
    for m in _POSSESSED.finditer(low):
        if m.group(1) in _DISCOURSE:
            return "reference"
    if len(words) < MIN_WORDS:
        return "fragment"
    turns = [m for m in earlier if m.role not in ("system", "developer")]
    if not turns:
        return None
    asked = next((m for m in reversed(turns) if m.role == "assistant"), None)
    question = low.endswith("?") or words[0] in _QUESTION_WORDS
    if asked is not None and "?" in asked.text()[-300:] and not question:
        return "answer"
    if _PERSONAL_YES_NO.match(low):
        return "situation"
    if not _GENERIC.match(low) and any(
            m.role == "user" and not m.text().rstrip().endswith("?")
            and _FACT.search(m.text().lower().replace("\u2019", "'")) for m in turns):
        return "situation"
    told = {stem(w) for m in turns if m.role == "user" for w in _WORD.findall(
        m.text().lower())}
    said = told | {stem(w) for m in turns if m.role == "assistant"
                   for w in _WORD.findall(m.text().lower())}
    for m in _SITUATED.finditer(low):
        noun = stem(m.group(2))
        if noun in (said if m.group(1) == "the" else told):
            return "situation"
    return None


def stands_alone(text: str, earlier: Sequence[Message]) -> bool:
    """May the answer to `text` after `earlier` be shared with other conversations?"""
    return depends_reason(text, earlier) is None
