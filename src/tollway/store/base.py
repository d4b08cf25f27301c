"""What the rest of Tollway needs from storage, as small protocols.

Two implementations: embedded (memory + SQLite, the zero-setup default) and shared
(Redis + PostgreSQL, for a fleet). Nothing outside `store/` knows which is in use,
and the same contract tests run against both.

Budget counters are named `<scope>/<id>/<metric>/<window>` (see policy/budget.py);
a window id embeds the period (d20261122, m202611, total), so a new period is a new
counter and nothing ever resets them.

A budget store that can lose its counters (Redis restarted empty, failed over,
flushed) keeps a marker that says they are current: without it, reserves are refused
as `stale` until one replica has rebuilt them from the ledger (policy/recovery.py).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from tollway.accounting.rows import Charged, LedgerRow, SpendRow
    from tollway.keys import KeyRecord
    from tollway.store.dashboard import DashboardStore


@dataclass(frozen=True, slots=True)
class Claim:
    """Reserve `amount` on `counter`, which may not go past `limit`."""

    counter: str
    limit: float
    amount: float


@dataclass(frozen=True, slots=True)
class Reservation:
    """The outcome of a reserve: each counter's level (spent + held: after the hold
    when it was taken, before when refused) and the first claim that did not fit."""

    levels: list[float]
    refused: int | None = None
    stale: bool = False  # the counters were lost and are not rebuilt yet: nothing taken


@dataclass(frozen=True, slots=True)
class LiveHold:
    """A hold a process took and has not settled yet (put back if the store lost it)."""

    id: str
    claims: Sequence[Claim]
    expires_at: float


# Whether the counters are current; if not, whether this caller now holds the lease to
# rebuild them ("mine") or another does ("busy").
RebuildClaim = Literal["current", "mine", "busy"]


class BudgetStore(Protocol):
    async def reserve(self, hold_id: str, claims: Sequence[Claim], expires_at: float,
                      now: float) -> Reservation:
        """All claims or none, atomically: the hold is recorded only when every
        counter stays within its limit — and never for a hold already settled (the
        caller records the hold before asking, so a request cancelled while this call
        is in flight still settles it; a settle that arrives first wins)."""
        ...

    async def settle(self, hold_id: str, charges: Sequence[tuple[str, float]]) -> bool:
        """Release the hold and add the real amounts. Only the first settle of a hold
        counts (returns True); an expired hold's charges still count."""
        ...

    async def levels(self, counters: Sequence[str], now: float) -> list[float]:
        """Spent + held (unexpired) on each counter."""
        ...

    async def add(self, counter: str, amount: float) -> float:
        """Add to a counter with no hold and no limit; the new level."""
        ...

    # After the counters were lost (a store that cannot lose them is always current).

    async def claim_rebuild(self, token: str, lease: float) -> RebuildClaim:
        """Whether the counters are current; if not, take (or renew) the lease to
        rebuild them for `lease` seconds, unless another token holds it."""
        ...

    async def restore(self, holds: Sequence[LiveHold], now: float) -> None:
        """Put back holds the store lost, as they were (no limit is checked: they were
        admitted), except those it has or that were settled."""
        ...

    async def lost_settles(self) -> set[str]:
        """The holds settled while the counters were not current: their charges are in
        the counters already, so a rebuild leaves their ledger rows out."""
        ...

    async def commit_rebuild(self, token: str, counters: Sequence[tuple[str, float]]
                             ) -> bool:
        """Raise each counter to its figure from the ledger plus what was settled since
        the loss (never lower one), then mark the counters current. False when the
        lease was lost (another replica rebuilds)."""
        ...

    async def release_rebuild(self, token: str) -> None:
        """Give up the lease (a rebuild that failed), if this token holds it."""
        ...


class LimitStore(Protocol):
    """Exact sliding windows (a log of what was taken when), for rate limits.

    A counter counts what was taken on it in (now - window, now]; an entry taken at
    t stops counting at t + window. Counter names are opaque (see policy/limits.py).
    """

    async def take(self, entry_id: str, claims: Sequence[Claim], window: float,
                   now: float) -> Reservation:
        """All claims or none, atomically: each counter's sum over the window plus
        its claim's amount must stay within its limit. On success the entry is recorded
        on every claimed counter at `now`. Levels are after the take (before it when
        refused); `refused` is the first claim that did not fit."""
        ...

    async def adjust(self, entry_id: str, amounts: Sequence[tuple[str, float]]) -> None:
        """Replace what this entry recorded on these counters (a worst case settled to
        the actual amount). A no-op where it has slid out of the window."""
        ...

    async def free_at(self, counter: str, need: float, limit: float, window: float,
                      now: float) -> float:
        """The earliest time >= now at which `need` more would fit on the counter
        (`now` when it fits already; infinity when need > limit)."""
        ...


class KeyStore(Protocol):
    async def put(self, rec: KeyRecord) -> None: ...
    async def by_hash(self, key_hash: str) -> KeyRecord | None: ...
    async def by_id(self, key_id: str) -> KeyRecord | None: ...
    async def all(self) -> list[KeyRecord]: ...


class LedgerStore(Protocol):
    async def append(self, rows: Sequence[LedgerRow]) -> None:
        """Write rows; idempotent by row id (a retried batch is not counted twice)."""
        ...

    async def rows(self, since: float | None = None, until: float | None = None, *,
                   after: tuple[float, str] | None = None,
                   limit: int | None = None) -> list[LedgerRow]:
        """Rows in [since, until), ordered by (ts, id); only those after the (ts, id)
        cursor `after`, at most `limit` of them."""
        ...

    async def spend(self, by: str, since: float | None = None,
                    until: float | None = None) -> list[SpendRow]:
        """Totals grouped by `by`: day, model, key, user, team, feature."""
        ...

    async def charged(self, by: Sequence[str], day: float, month: float,
                      exclude: Callable[[], Awaitable[Collection[str]]]) -> list[Charged]:
        """What the rows charged to budgets, per period (since `day`, since `month`,
        before) and per the values of the fields `by` (`rows.charged_of`), leaving out
        the rows whose id `exclude()` names — asked once the rows to read are fixed,
        so a row written meanwhile is either read and left out or not read."""
        ...


class OnceStore(Protocol):
    async def first(self, name: str, until: float) -> bool:
        """True for the first caller to claim `name` (which lapses at `until`)."""
        ...


@dataclass(frozen=True, slots=True)
class FiredAlert:
    """A spend alert as it fired (policy/alerts.py), kept for the dashboard."""

    at: float
    rule: str  # budget | hourly_spend
    scope: str  # the budget's scope: global (hourly spend too), team, key, user, ...
    name: str  # the budget's team, key lineage, user... ("" for global)
    message: str
    detail: bytes  # the alert as its webhook got it, JSON


class AlertStore(Protocol):
    async def record(self, alert: FiredAlert) -> None: ...

    async def fired(self, since: float, until: float, key: str | None,
                    limit: int) -> list[FiredAlert]:
        """Newest first, fired in [since, until); `key`: only those on that key
        lineage's budgets."""
        ...


class CacheStore(Protocol):
    """Cached answers by key (bounded: the least recently used go first) and, per
    semantic partition, an append-only log of entries that every replica reads from
    its last cursor into its own vector index. Expiry here only frees space: entries
    carry their expiry, which the cache checks on the gateway's clock."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def append(self, partition: str, entry: bytes, ttl: float, max_entries: int
                     ) -> None:
        """Add to a partition's log, keeping about its newest `max_entries`."""
        ...

    async def read(self, partition: str, cursor: str) -> tuple[list[bytes], str]:
        """The entries appended after `cursor` ("" for the start) and the new cursor."""
        ...

    async def close(self) -> None:
        """Let go of a connection of its own (the store closes what it shares)."""
        ...


@dataclass(frozen=True, slots=True)
class PartHealth:
    """One part of a store: reachable or not (and why not)."""

    up: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """A server-side conversation, without its turns."""

    owner: str  # who may read and extend it (see conversation/thread.py)
    id: str  # the caller's id, unique per owner
    created_at: float
    updated_at: float
    turns: int  # messages stored
    tokens: int  # input + output tokens of every request made in it
    cost_usd: float


@dataclass(frozen=True, slots=True)
class StoredConversation:
    info: ConversationInfo
    system: bytes | None  # the latest system prompt: a JSON list of messages
    turns: list[bytes]  # one JSON message each, oldest first


class ConversationStore(Protocol):
    """Server-side conversations (their turns, as opaque JSON messages) and the
    summaries that stand in for their older turns. Everything is addressed by owner:
    one owner never reads, extends or deletes another's."""

    async def load(self, owner: str, conversation: str) -> StoredConversation | None: ...

    async def append(self, owner: str, conversation: str, system: bytes | None,
                     turns: Sequence[bytes], tokens: int, cost_usd: float,
                     now: float) -> int:
        """Add `turns` after the stored ones (creating the conversation when new;
        concurrent appends to one conversation are serialised, never interleaved
        within one call); replace the stored system prompt when `system` is given; add
        `tokens` and `cost_usd` to its totals. Returns the number of turns stored."""
        ...

    async def list(self, owner: str | None, limit: int) -> list[ConversationInfo]:
        """The most recently updated first; `owner` None: every owner's."""
        ...

    async def delete(self, owner: str, conversation: str) -> bool:
        """Delete the conversation, its turns and its summaries, for good. False when
        this owner has no such conversation."""
        ...

    async def prune(self, before: float) -> int:
        """Delete, for good, every conversation last updated before `before` (with its
        turns and summaries) and every summary written before it; how many
        conversations went."""
        ...

    async def summary(self, owner: str, prefixes: Sequence[str]) -> tuple[str, bytes] | None:
        """The first of `prefixes` (in the order given) that has a summary stored for
        this owner, and that summary."""
        ...

    async def put_summary(self, owner: str, prefix: str, conversation: str | None,
                          summary: bytes, now: float) -> None:
        """Store (or replace) the summary of a history prefix; `conversation` ties it
        to a server-side conversation, so deleting that deletes it."""
        ...


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A Responses API response as it was answered (`wire/responses.py`): the Response
    object, and every input item it answered — those of the responses it continued
    included — so that it can be read back, listed and continued on any replica."""

    owner: str  # who may read, continue or delete it (as a conversation's owner)
    id: str  # resp_…, unique
    created_at: float
    response: bytes  # the Response object, JSON
    input_items: bytes  # a JSON array of items, oldest first


class ResponseStore(Protocol):
    """Stored Responses API responses, addressed by owner: one owner never reads,
    continues or deletes another's."""

    async def put(self, response: StoredResponse) -> None:
        """Store it (a response is written once, when it is complete)."""
        ...

    async def get(self, owner: str, response_id: str) -> StoredResponse | None: ...

    async def delete(self, owner: str, response_id: str) -> bool:
        """Delete it for good; False when this owner has no such response."""
        ...

    async def prune(self, before: float) -> int:
        """Delete, for good, every response created before `before`; how many went."""
        ...


# A batch's life: validating -> in_progress -> finalizing (the store moves it when its
# last line settles) -> completed; or -> cancelling (`cancel`) -> cancelled; or failed,
# expired. The gateway moves it everywhere else (`set_status`).
BatchStatus = Literal["validating", "in_progress", "finalizing", "completed", "failed",
                      "expired", "cancelling", "cancelled"]
# What a restarted process resumes, and what retention leaves alone.
BATCH_ACTIVE: frozenset[str] = frozenset({"validating", "in_progress", "finalizing",
                                          "cancelling"})
BATCH_ENDED: frozenset[str] = frozenset({"completed", "failed", "expired", "cancelled"})
LineState = Literal["pending", "running", "done", "failed", "cancelled"]
# What a line may finish as, and what it adds to the batch's (completed, failed,
# cancelled) counters.
_LINE_ENDS: dict[str, tuple[int, int, int]] = {"done": (1, 0, 0), "failed": (0, 1, 0),
                                               "cancelled": (0, 0, 1)}


@dataclass(frozen=True, slots=True)
class StoredFile:
    """An uploaded (or written) file's metadata; its bytes go separately."""

    owner: str  # who may read, list or delete it (as a conversation's owner)
    id: str  # file-…, unique across owners
    purpose: str  # "batch", "batch_output", …
    filename: str
    size: int  # bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch: its request lines are `BatchLine`s, its counters kept by the store."""

    owner: str
    id: str  # batch_… (msgbatch_…), unique across owners (its lines are filed under it)
    endpoint: str  # "/v1/chat/completions", …
    input_file_id: str  # "" for a message batch (its requests came in the body)
    status: BatchStatus
    created_at: float
    expires_at: float
    total: int  # lines
    completed: int  # lines finished "done"
    failed: int  # lines finished "failed"
    cancelled: int  # lines cancelled (by `cancel`, or finished so)
    cost_pico: int  # what its lines cost, in 1e-12 USD
    hold_id: str | None  # the budget hold taken for it
    meta: bytes  # the gateway's JSON (metadata, errors, timestamps, file ids, …)

    @property
    def settled_lines(self) -> int:
        return self.completed + self.failed + self.cancelled

    @property
    def settled(self) -> bool:
        """No line is left to run or running."""
        return self.settled_lines >= self.total


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One request of a batch, and what came of it."""

    batch_id: str
    index: int  # its line in the input file, from 0
    custom_id: str
    body: bytes  # the request body, JSON
    state: LineState
    result: bytes | None  # the response or error, JSON, once finished
    cost_pico: int
    attempts: int  # times claimed


# What a finish did: "refused" — nothing, the line is not running under this worker (its
# lease was taken over, or it was cancelled); "recorded"; "last" — recorded, and it was
# the batch's last unsettled line: the batch moved in_progress -> finalizing (a
# cancelling one stays cancelling) and this caller, alone, writes its output.
Finish = Literal["refused", "recorded", "last"]


@dataclass(frozen=True, slots=True)
class Cancelling:
    """A batch after `cancel`; `last`: this call settled its last line (none was
    running), so this caller, alone, writes its output."""

    batch: BatchRecord
    last: bool


_FILE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}")


def check_new_file(file: StoredFile, content: bytes) -> None:
    """A file's id may name it on disk (the embedded store's), so it is a plain name."""
    if not _FILE_ID.fullmatch(file.id):
        raise ValueError(f"not a file id: {file.id!r}")
    if file.size != len(content):
        raise ValueError("a file's size is its content's length")


def check_new_batch(batch: BatchRecord, lines: Sequence[BatchLine]) -> None:
    """The store counts settled lines against `total` (the last one finalizes the
    batch), so a new batch has lines, counts them all, and has none settled."""
    if not lines or batch.total != len(lines) or batch.settled_lines:
        raise ValueError("a new batch has lines, counts them in total, and none settled")
    if any(line.batch_id != batch.id for line in lines):
        raise ValueError("every line must belong to the batch")


def line_end(state: str) -> tuple[int, int, int]:
    """What finishing a line as `state` adds to its batch's (completed, failed,
    cancelled) counters."""
    adds = _LINE_ENDS.get(state)
    if adds is None:
        raise ValueError(f"a line finishes as one of {', '.join(_LINE_ENDS)}")
    return adds


class BatchStore(Protocol):
    """Files (`/v1/files`) and batches (`/v1/batches`, Anthropic message batches), with
    their lines as units of work that any process (any replica) claims under a lease.
    Files and batches are addressed by owner: one owner never reads, lists, cancels or
    deletes another's. Lines are addressed by batch id (only the runner sees them)."""

    async def put_file(self, file: StoredFile, content: bytes) -> None:
        """Store a new file (its id unused: an existing id is an error); `file.size`
        must be len(content)."""
        ...

    async def get_file(self, owner: str, file_id: str) -> StoredFile | None: ...

    async def file_content(self, owner: str, file_id: str) -> bytes | None: ...

    async def delete_file(self, owner: str, file_id: str) -> bool:
        """Delete it and its content for good; False when this owner has no such file."""
        ...

    async def list_files(self, owner: str, purpose: str | None, after: str | None,
                         limit: int) -> list[StoredFile]:
        """Newest first (those of `purpose`, or all), after the file `after` (an id:
        none when this owner has no such file)."""
        ...

    async def create_batch(self, batch: BatchRecord, lines: Sequence[BatchLine]) -> None:
        """The batch and all its lines, in one transaction (`check_new_batch`)."""
        ...

    async def get_batch(self, owner: str, batch_id: str) -> BatchRecord | None: ...

    async def list_batches(self, owner: str, after: str | None, limit: int,
                           prefix: str = "") -> list[BatchRecord]:
        """Newest first, after the batch `after` (as `list_files`); only those whose id
        begins with `prefix` (each API's batches have their own: `batch_`,
        `msgbatch_`)."""
        ...

    async def claim(self, worker: str, limit: int, lease_s: float, now: float,
                    only: str | None = None) -> list[BatchLine]:
        """Up to `limit` lines of in_progress batches, the oldest batch first and in
        index order: pending ones, and running ones whose lease has ended by `now` (a
        dead worker's). Each is now running under `worker` (unique to one process: it
        fences `finish`) until now + lease_s, one attempt more. Atomic across
        processes and replicas: no line is given to two claimers at once. `only`: of
        that batch alone."""
        ...

    async def finish(self, batch_id: str, index: int, worker: str, state: LineState,
                     result: bytes | None, cost_pico: int) -> Finish:
        """Settle a line running under `worker` as done, failed or cancelled, adding to
        the batch's counters and cost in the same transaction (see `Finish`)."""
        ...

    async def set_status(self, owner: str, batch_id: str, status: BatchStatus, *,
                         expect: Collection[str], meta: bytes | None = None) -> bool:
        """Compare and set: move the batch to `status` (and replace its meta, when
        given) only if its status is one of `expect`."""
        ...

    async def cancel(self, owner: str, batch_id: str, *,
                     meta: bytes | None = None) -> Cancelling | None:
        """A validating or in_progress batch becomes cancelling (its meta replaced,
        when given) and every pending line cancelled, in one transaction; running lines
        still finish, or `cancel_stale` settles them. Any other batch is returned as it
        is. None when this owner has no such batch."""
        ...

    async def cancel_stale(self, batch_id: str, now: float) -> bool:
        """Cancel the running lines of a cancelling batch whose lease has ended by
        `now` (their worker died: nothing else would settle them). True when that
        settled its last line: this caller, alone, writes its output."""
        ...

    async def lines(self, batch_id: str, after_index: int, limit: int) -> list[BatchLine]:
        """The lines after `after_index` (-1: from the first), in index order."""
        ...

    async def active(self, limit: int) -> list[BatchRecord]:
        """Every owner's batches in BATCH_ACTIVE, oldest first: what to resume."""
        ...

    async def prune(self, before: float) -> int:
        """Delete, for good, every ended batch (BATCH_ENDED) created before `before`
        with its lines, and every file created before it but the input files of the
        batches left; how many batches went."""
        ...


class Store(Protocol):
    budgets: BudgetStore
    limits: LimitStore
    # Where rate limits are kept while `limits` is unreachable: this process alone
    # (the shared store fails open for limits). The embedded store's own.
    fallback_limits: LimitStore
    keys: KeyStore
    ledger: LedgerStore
    dashboard: DashboardStore  # reports over the ledger
    alerts: AlertStore
    once: OnceStore
    cache: CacheStore
    conversations: ConversationStore
    responses: ResponseStore
    batches: BatchStore

    async def open(self) -> None:
        """Connect (and migrate) before the first use. A part that cannot be reached
        does not fail it: it keeps trying in the background, and its calls fail (each
        caller's failure policy applies, store/outage.py) until it is connected."""
        ...

    async def health(self) -> dict[str, PartHealth]:
        """Each part that can be down, now (for /health/ready)."""
        ...

    async def close(self) -> None: ...
