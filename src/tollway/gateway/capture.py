"""Opt-in capture of chat traffic as a trace `tollway replay` reads (config `capture`),
so a policy can be priced on an app's own conversations.

Each chat request that ends with a user turn is one turn of a conversation, found by
  - the request's `x-tollway-conversation-id` (or its stored `x-tollway-conversation`);
  - else its history: the key of the user turns before its latest one (with the system
    prompt, the end user and the feature) names the conversation whose earlier turn had
    exactly those user turns — so turn N+1 of a conversation the app resends whole joins
    turn N's. The assistant turns are left out of the key (they are not needed to
    replay, and an app may resend them reformatted). A first turn starts a conversation.
Sampling is decided per conversation (a captured one has all its turns).

`begin` (on the request path, before any stage changes the messages) keeps the turn's
text; `end` (at `finish`) only appends it to a buffer, with whether the client aborted.
A background task writes the buffer every `flush_seconds`, in a thread: each turn's
text and system prompt go through the PII redaction (guards/pii.py) first — whatever the
request's guard policy — and one JSON line per turn is appended (wire/trace.py). Past
`max_buffered_turns` waiting, turns are dropped and counted. `close` writes what is left.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections import OrderedDict
from pathlib import Path

import msgspec

from tollway import tasks
from tollway.accounting.settlement import Aborted, Outcome
from tollway.config import CaptureConfig
from tollway.guards import pii
from tollway.policy.auth import Caller
from tollway.types import ChatRequest
from tollway.wire import sse
from tollway.wire.trace import Turn, TurnLine

log = logging.getLogger("tollway.capture")

SYSTEM_ROLES = ("system", "developer")
KNOWN_HISTORIES = 100_000  # history keys remembered to join the next turns (oldest go)
_encode = msgspec.json.Encoder().encode


class Captured(msgspec.Struct):
    """One request's user turn as it came (raw text: redacted only when written)."""

    conversation: str
    n: int  # the user turns before it in its conversation
    text: str
    system: str | None
    user: str | None  # hashed
    feature: str | None
    abort_after: int | None = None  # set by `end`
    received: list[bytes] | None = None  # an aborted stream's chunks, counted when written


def digest(*parts: str, size: int = 16) -> str:
    h = hashlib.blake2b(digest_size=size)
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


class Capture:
    def __init__(self, config: CaptureConfig) -> None:
        assert config.path is not None
        self.config = config
        self.path = Path(config.path)
        self._threshold = int(config.sample * 2**64)
        self._known: OrderedDict[str, str] = OrderedDict()  # history key -> conversation
        self._turns: list[Captured] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.written = 0
        self.dropped = 0

    # --- the request path ----------------------------------------------------------------

    def begin(self, req: ChatRequest, caller: Caller, conversation: str | None
              ) -> Captured | None:
        """The request's latest user turn and the conversation it belongs to; None when
        it does not end with a user turn (a tool result) or is not sampled."""
        messages = req.messages
        if not messages or messages[-1].role != "user":
            return None
        system = "\n\n".join(m.text() for m in messages if m.role in SYSTEM_ROLES) or None
        users = [m.text() for m in messages if m.role == "user"]
        user = "u-" + digest(caller.user, size=8) if caller.user is not None else None
        if conversation is not None:  # the caller's own id (hashed: it may say who)
            cid = "c-" + digest(conversation)
        else:
            head = (user or "", caller.feature or "", system or "")
            cid = self._conversation(digest(*head, *users[:-1]), digest(*head, *users),
                                     first=len(users) == 1)
        if int(cid[2:18], 16) >= self._threshold:
            return None
        return Captured(cid, len(users) - 1, users[-1], system, user, caller.feature)

    def _conversation(self, before: str, after: str, first: bool) -> str:
        """The conversation whose last turn left the history `before` (a new one for a
        first turn, or one this replica has not seen: then named after `before`, so its
        next turns join it here), remembered as having reached `after`."""
        known = self._known
        cid = "c-" + secrets.token_hex(16) if first else known.get(before) or "c-" + before
        known[after] = cid
        known.move_to_end(after)
        if len(known) > KNOWN_HISTORIES:
            known.popitem(last=False)
        return cid

    def end(self, turn: Captured, outcome: Outcome) -> None:
        """Buffered with whether the client left before the end (the chunks it had, or
        1 when none had come)."""
        if isinstance(outcome, Aborted):
            stream = outcome.answer.stream if outcome.answer is not None else None
            turn.abort_after = 1
            if stream is not None and stream.received:
                turn.received = stream.received
        if len(self._turns) >= self.config.max_buffered_turns:
            if self.dropped == 0:
                log.warning("capture: %d turns waiting to be written; dropping new ones",
                            len(self._turns))
            self.dropped += 1
            return
        self._turns.append(turn)

    # --- lifetime -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tollway-capture")

    async def close(self) -> None:
        task, self._task = self._task, None
        await tasks.stop(task)
        await self.flush()
        if self.dropped:
            log.warning("capture: %d turns dropped (the writer fell behind)", self.dropped)

    async def flush(self) -> None:
        async with self._lock:
            turns, self._turns = self._turns, []
            if not turns:
                return
            try:
                await asyncio.to_thread(self._write, turns)
                self.written += len(turns)
            except OSError as e:  # a full disk, a bad path: capture is best effort
                self.dropped += len(turns)
                log.warning("capture: could not write %d turns to %s: %s", len(turns),
                            self.path, e)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_seconds)
            await self.flush()

    def _write(self, turns: list[Captured]) -> None:
        lines = b"".join(_encode(line_of(t, self.config.redact)) + b"\n" for t in turns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(lines)


def line_of(t: Captured, redact: bool) -> TurnLine:
    """A captured turn as a trace line: its text (and the system prompt) redacted, its
    meaning a hash of the text as written, its kind and needs left for a labelling
    step."""
    text, system = (scrub(t.text), scrub(t.system)) if redact else (t.text, t.system)
    abort_after = t.abort_after
    if t.received is not None:
        abort_after = max(1, chunks(t.received))
    turn = Turn("captured", text or "", "m-" + digest(text or "", size=8), "unknown",
                abort_after)
    return TurnLine(t.conversation, t.n, turn, system, t.user, t.feature)


def scrub(text: str | None) -> str | None:
    if not text:
        return text
    return pii.redact(text, pii.find(text)).text


def chunks(received: list[bytes]) -> int:
    """The stream's data events (not `[DONE]`): what the client had been sent."""
    events, _ = sse.split_events(b"".join(received))
    return sum(1 for _, data in events if data != b"[DONE]")
