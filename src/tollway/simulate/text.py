"""Deterministic reply text whose token count is known without tokenizing it.

Every word below is a single token, with its leading space, in both o200k_base and
cl100k_base (sentence starters also without the space), and "." is one token. The
tokenizers' pre-split keeps " word" and "." apart, so a text made of these pieces has
exactly one token per piece in either encoding: `count_text(reply_text(k, n)) == n`.

Replies are cut from a fixed corpus of simple sentences built once at import; a hash of
the prompt and the choice index picks the sentence to start at. Same prompt, same reply,
on every machine and run.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache


def _words(s: str) -> tuple[str, ...]:
    return tuple(s.split())


_STARTERS = ("The", "A", "This", "Each", "Every", "One", "Our", "That", "Your", "My", "Her",
             "His", "Their", "No", "Some")
_DETS = tuple(w.lower() for w in _STARTERS)
# Consonant-initial, so "a <word>" reads right.
_ADJS = _words("""quiet small bright simple green warm long large clear strong busy calm dark
deep fresh gentle good great happy heavy high light little local main modern narrow new next
nice plain proper quick rare real red rich round safe short slow soft solid special steady
still sudden sweet tall thin tiny true wide wild young blue cold dry fair fine free full hard
hot just kind late low major near poor public pure ready right rough sharp silent single smooth
social stable strange thick tight wet white whole""")
_NOUNS = _words("""river stone bridge garden city house road window market teacher student letter
system report project team machine signal model story plan book table door paper field forest
mountain village harbor camera phone screen network server program question problem lesson
method result picture song voice friend family doctor driver farmer worker leader writer reader
player manager partner customer company school library museum station kitchen bottle basket
candle ladder pocket ticket wallet jacket path lake tree flower cloud storm wind light shadow
morning night summer winter season journey message record sample channel process service
product feature budget schedule meeting review design pattern""")
_VERBS = _words("""carries finds builds opens moves holds shows reads writes makes takes keeps
brings helps follows changes starts needs sees meets leaves joins fills covers checks counts
draws drives enters fixes gives guides lifts marks names notes offers paints passes picks places
plays pulls pushes raises reaches saves sends sets shares signs sorts supports tests touches
tracks trains turns visits watches wins""")
_PREPS = _words("""near with from into across under over after before behind through beside
around along inside toward without during beyond""")
_ADVS = _words("today again quickly slowly often now soon still here there together early later "
               "tonight")

# Every distinct piece a reply can contain (for the vocabulary test).
VOCABULARY: frozenset[str] = frozenset(
    set(_STARTERS) | {" " + w for ws in (_STARTERS, _DETS, _ADJS, _NOUNS, _VERBS,
                                                  _PREPS, _ADVS) for w in ws} | {"."})

_CORPUS_SENTENCES = 2048


class _Draw:
    """A byte stream from blake2b in counter mode: stable across Python versions,
    unlike `random`."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0
        self._buf = b""
        self._pos = 0

    def below(self, n: int) -> int:
        if self._pos + 2 > len(self._buf):
            self._buf = hashlib.blake2b(self._counter.to_bytes(8, "little"),
                                        key=self._key).digest()
            self._counter += 1
            self._pos = 0
        v = int.from_bytes(self._buf[self._pos:self._pos + 2], "little")
        self._pos += 2
        return v % n

    def pick(self, words: tuple[str, ...]) -> str:
        return words[self.below(len(words))]


def _sentence(d: _Draw) -> list[str]:
    """`Det [Adj] Noun Verb det [Adj] Noun [Prep det Noun] [Adv].` as pieces."""
    out = [" " + d.pick(_STARTERS)]
    if d.below(2):
        out.append(" " + d.pick(_ADJS))
    out += [" " + d.pick(_NOUNS), " " + d.pick(_VERBS), " " + d.pick(_DETS)]
    if d.below(2):
        out.append(" " + d.pick(_ADJS))
    out.append(" " + d.pick(_NOUNS))
    if d.below(2):
        out += [" " + d.pick(_PREPS), " " + d.pick(_DETS), " " + d.pick(_NOUNS)]
    if d.below(3) == 0:
        out.append(" " + d.pick(_ADVS))
    out.append(".")
    return out


def _build_corpus() -> tuple[tuple[str, ...], tuple[int, ...]]:
    d = _Draw(b"tollway-simulate-corpus-v1")
    pieces: list[str] = []
    starts: list[int] = []
    for _ in range(_CORPUS_SENTENCES):
        starts.append(len(pieces))
        pieces += _sentence(d)
    return tuple(pieces), tuple(starts)


# The corpus ends with "." and starts with " Starter", so reading past its end wraps
# around cleanly.
_CORPUS, _STARTS = _build_corpus()


def _start_index(prompt_key: str, choice: int) -> int:
    h = hashlib.blake2b(f"{choice}\x00{prompt_key}".encode(), digest_size=8).digest()
    return _STARTS[int.from_bytes(h, "little") % len(_STARTS)]


@lru_cache(maxsize=8192)
def reply_pieces(prompt_key: str, n_tokens: int, choice: int = 0) -> tuple[str, ...]:
    """The reply as its tokens: one string per token, in order. Joined, they are
    `reply_text(prompt_key, n_tokens, choice)`; streams send one piece per chunk."""
    if n_tokens <= 0:
        return ()
    start = _start_index(prompt_key, choice)
    size = len(_CORPUS)
    out: list[str] = []
    pos, left = start, n_tokens
    while left:
        take = min(left, size - pos)
        out += _CORPUS[pos:pos + take]
        left -= take
        pos = 0
    out[0] = out[0][1:]  # the reply's first word has no leading space
    return tuple(out)


@lru_cache(maxsize=8192)
def reply_text(prompt_key: str, n_tokens: int, choice: int = 0) -> str:
    """The deterministic reply to `prompt_key` (the last user message's text): exactly
    `n_tokens` tokens by `tollway.accounting.tokens.count_text`."""
    return "".join(reply_pieces(prompt_key, n_tokens, choice))


def token_pieces(text: str, model: str = "") -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Split arbitrary text into per-token strings, for streaming text that is not a plain
    reply (JSON, tool arguments, text cut at a stop sequence). Returns (pieces, tokens per
    piece): a token that is not valid UTF-8 on its own is merged with the next ones."""
    from tollway.accounting.tokens import encoding, encoding_name_for

    enc = encoding(encoding_name_for(model))
    pieces: list[str] = []
    weights: list[int] = []
    pending = b""
    n = 0
    for tok in enc.encode_ordinary(text):
        pending += enc.decode_single_token_bytes(tok)
        n += 1
        try:
            piece = pending.decode()
        except UnicodeDecodeError:
            continue
        pieces.append(piece)
        weights.append(n)
        pending, n = b"", 0
    if pending:
        pieces.append(pending.decode(errors="replace"))
        weights.append(n)
    return tuple(pieces), tuple(weights)
