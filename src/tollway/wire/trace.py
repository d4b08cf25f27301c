"""The trace format `tollway replay` reads: JSON lines, each either a whole
conversation or one turn of one.

    {"id": "c1", "system": "...", "user": "...", "feature": "...", "turns": [TURN, ...]}
    {"id": "c1", "n": 0, "system": "...", "user": "...", "feature": "...", "turn": TURN}

TURN is `{"kind", "text", "meaning", "needs", "abort_after"}`: the user's text, a label of
what kind of turn it is and of what it means (two turns of one meaning may share an
answer), what it needs (a strong model or a cheap one), and after how many stream chunks
the client closed it (None: read to the end). The assistant turns are not in it: replay
regenerates them.

A whole-conversation line is what bench/chatbot_trace.py writes; per-turn lines are what
the gateway's capture appends as turns arrive (gateway/capture.py), `n` being the turn's
place in its conversation (turns can finish out of order: an abandoned stream is noticed
late). `read` groups them back into conversations.
"""

from __future__ import annotations

import msgspec


class Turn(msgspec.Struct):
    kind: str
    text: str
    meaning: str
    needs: str = "strong"
    abort_after: int | None = None


class Conversation(msgspec.Struct):
    id: str
    turns: list[Turn]
    system: str | None = None
    user: str | None = None
    feature: str | None = None


class TurnLine(msgspec.Struct, omit_defaults=True):
    """One turn of conversation `id`, on a line of its own."""

    id: str
    n: int
    turn: Turn
    system: str | None = None
    user: str | None = None
    feature: str | None = None


class _Line(msgspec.Struct):
    """Either kind of line, told apart by `turns` / `turn`."""

    id: str
    turns: list[Turn] | None = None
    turn: Turn | None = None
    n: int | None = None
    system: str | None = None
    user: str | None = None
    feature: str | None = None


_decode = msgspec.json.Decoder(_Line).decode


def read(data: bytes) -> list[Conversation]:
    """The conversations of a trace, in the order each first appears; a conversation's
    per-turn lines in the order of `n` (the file's order among equal ones), after the
    turns of a whole-conversation line of the same id."""
    convs: dict[str, Conversation] = {}
    pending: dict[str, list[tuple[int, int, Turn]]] = {}
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = _decode(raw)
        except msgspec.DecodeError as e:
            raise ValueError(f"trace line {number}: {e}") from None
        if (line.turns is None) == (line.turn is None):
            raise ValueError(f"trace line {number}: a line holds either `turns` (a whole "
                             "conversation) or `turn` (one turn of it)")
        conv = convs.get(line.id)
        if conv is None:
            conv = convs[line.id] = Conversation(line.id, [], line.system, line.user,
                                                 line.feature)
        else:  # the first line that says wins
            conv.system = conv.system if conv.system is not None else line.system
            conv.user = conv.user if conv.user is not None else line.user
            conv.feature = conv.feature if conv.feature is not None else line.feature
        if line.turns is not None:
            conv.turns += line.turns
        elif line.turn is not None:
            turns = pending.setdefault(line.id, [])
            turns.append((line.n if line.n is not None else len(turns), number, line.turn))
    for cid, turns in pending.items():
        convs[cid].turns += [t for _, _, t in sorted(turns, key=lambda x: (x[0], x[1]))]
    return list(convs.values())
