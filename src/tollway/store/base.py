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

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from tollway.accounting.rows import Charged, LedgerRow, SpendRow
    from tollway.keys import KeyRecord


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


class Store(Protocol):
    budgets: BudgetStore
    limits: LimitStore
    # Where rate limits are kept while `limits` is unreachable: this process alone
    # (the shared store fails open for limits). The embedded store's own.
    fallback_limits: LimitStore
    keys: KeyStore
    ledger: LedgerStore
    once: OnceStore
    cache: CacheStore
    conversations: ConversationStore
    responses: ResponseStore

    async def open(self) -> None:
        """Connect (and migrate) before the first use. A part that cannot be reached
        does not fail it: it keeps trying in the background, and its calls fail (each
        caller's failure policy applies, store/outage.py) until it is connected."""
        ...

    async def health(self) -> dict[str, PartHealth]:
        """Each part that can be down, now (for /health/ready)."""
        ...

    async def close(self) -> None: ...
