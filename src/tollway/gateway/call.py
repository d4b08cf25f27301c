"""One request's record, from the edge to `finish`.

Who writes what, in the order of the request path (`pipeline.py`); everything else only
reads:

    request_id, row_id,
    started, t0, trace       the edge (ChatEndpoint), or the parent call (a summary);
                             the ledger row's id is also its budget hold's
    batch, prepaid           the batch runner, for a batch's line: the row id is the
                             one it assigned the line, whose hold the batch took
    caller                   the edge, then `Gateway.authenticate` (the key), then
                             `begin` (the end user, once the body is read)
    asks                     the edge: what the request's headers asked of the gateway
    kind, model_asked,
    stream, count            `begin` (or `begin_embeddings`)
    captured                 `Pipeline.chat` at begin, when traffic is captured
    thread                   memory.recall (a server-side conversation)
    guards                   guards.inspect (what the input guards did)
    history                  memory.shape (what the history policy sent)
    plan                     planner.cap (with what planner.degrade decided), then
                             planner.downgrade, and planner.complete after the cache
    cache                    cache.lookup
    admission                admission.admit (or .take on a cache hit)
    attempts                 the router (which deployment, retries, fallback)
    first_byte, meter        the pipeline, once a stream's first event is in
    spent                    the output guards' discarded attempts
    releases                 each stage that takes something: `finish` unwinds them
    settlement               `Pipeline.priced`, once: the trailer, the headers, the
                             conversation store and the ledger read it
    finished                 `finish`, which runs once
"""

from __future__ import annotations

import time

import msgspec

from tollway.accounting.meter import StreamMeter
from tollway.accounting.rows import new_row_id
from tollway.accounting.settlement import Releases, Settlement
from tollway.accounting.tokens import InputCount, InputsCount, TokenCount
from tollway.cache.controls import CacheAsk
from tollway.cache.response import Lookup
from tollway.conversation.history import HistoryAsk
from tollway.conversation.memory import HistoryOutcome
from tollway.conversation.thread import Thread
from tollway.gateway.capture import Captured
from tollway.guards.policy import GuardRecord
from tollway.policy.admission import Admission
from tollway.policy.auth import Caller
from tollway.policy.plan import Plan
from tollway.routing.router import Attempts
from tollway.tracing import Traced
from tollway.types import ChatRequest, EmbeddingRequest


class Asks(msgspec.Struct, frozen=True):
    """What a request's own headers asked of the gateway."""

    tier: str | None = None  # x-tollway-tier
    conversation: str | None = None  # x-tollway-conversation-id: a label (budgets, ledger)
    stored_conversation: str | None = None  # x-tollway-conversation: kept server-side
    history: HistoryAsk | None = None  # x-tollway-history, x-tollway-history-tokens
    cache: CacheAsk | None = None  # Cache-Control, x-tollway-cache*


CHAT, EMBEDDINGS = "chat", "embeddings"  # a call's kind
NOBODY = Caller()  # frozen: shared as the default
NO_ASKS = Asks()


class Call(msgspec.Struct, eq=False):
    """(A Struct: one is made per request, and a dataclass this wide costs ~4x more.)"""

    request_id: str
    caller: Caller = NOBODY
    asks: Asks = NO_ASKS
    internal: str | None = None  # a call the gateway makes itself ("summary")
    batch: str | None = None  # the batch this call is a line of (its ledger row's batch_id)
    # Its worst case was held when its batch was created (Admitter.hold_many), under
    # its row id: it reserves nothing itself, and its finish settles that hold.
    prepaid: bool = False
    started: float = msgspec.field(default_factory=time.time)  # epoch s, for the ledger
    row_id: str = msgspec.field(default_factory=new_row_id)  # its ledger row's, its hold's
    t0: float = msgspec.field(default_factory=time.perf_counter)
    kind: str = CHAT  # or EMBEDDINGS: which endpoint, for the ledger
    model_asked: str | None = None
    stream: bool = False
    count: TokenCount | None = None
    captured: Captured | None = None
    thread: Thread | None = None
    guards: GuardRecord | None = None
    history: HistoryOutcome | None = None
    plan: Plan | None = None
    cache: Lookup | None = None
    admission: Admission | None = None
    attempts: Attempts = msgspec.field(default_factory=Attempts)
    first_byte: float | None = None  # perf_counter when a stream's first event came
    meter: StreamMeter | None = None
    spent: tuple[Settlement, ...] = ()  # discarded attempts: rare, so no list per call
    releases: Releases = msgspec.field(default_factory=Releases)
    settlement: Settlement | None = None
    finished: bool = False
    trace: Traced | None = None  # its span, when tracing is on (tracing.py)

    @property
    def conversation(self) -> str | None:
        """The conversation it is charged to: a stored one, else the label."""
        return self.thread.id if self.thread is not None else self.asks.conversation

    def begin(self, req: ChatRequest) -> InputCount:
        """The body is read: what was asked, and the end user it names."""
        self.model_asked, self.stream = req.model, req.stream
        self.caller = self.caller.with_user(req.user)
        count = self.count = InputCount(req)
        return count

    def begin_embeddings(self, req: EmbeddingRequest) -> InputsCount:
        """`begin`, for an embeddings request."""
        self.kind, self.model_asked = EMBEDDINGS, req.model
        self.caller = self.caller.with_user(req.user)
        count = self.count = InputsCount(req)
        return count

    def internal_call(self, purpose: str, history: HistoryAsk) -> Call:
        """A call the gateway makes on this one's behalf: the same caller and
        conversation, its own ledger row."""
        return Call(request_id=f"{self.request_id}:{purpose}", caller=self.caller,
                    asks=Asks(conversation=self.conversation, history=history),
                    internal=purpose)
