"""The PostgreSQL conversation store, shared by every replica.

Concurrent appends to one conversation (from any replica) serialise on its row: the
upsert that creates or extends it locks the row until its statement commits, and the
turns' sequence numbers follow from the count it returns, so they never collide.
A delete takes that lock first, so no append can slip turns in behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tollway.store.base import ConversationInfo, StoredConversation


class Pooled(Protocol):
    """What this part needs of the PostgreSQL store: its connection pool."""

    @property
    def pool(self) -> Any: ...  # an asyncpg.Pool (asyncpg ships no types)

_INFO = "owner, id, created_at, updated_at, turns, tokens, cost_usd"

# One statement (so one transaction and one round trip): every data-modifying part of
# a WITH runs to completion, and the turns insert reads the count the upsert returned.
_APPEND = """
WITH up AS (
    INSERT INTO conversations AS c
        (owner, id, created_at, updated_at, system, turns, tokens, cost_usd)
    VALUES ($1, $2, $3, $3, $4, cardinality($5::bytea[]), $6, $7)
    ON CONFLICT (owner, id) DO UPDATE SET updated_at = EXCLUDED.updated_at,
        system = coalesce(EXCLUDED.system, c.system), turns = c.turns + EXCLUDED.turns,
        tokens = c.tokens + EXCLUDED.tokens, cost_usd = c.cost_usd + EXCLUDED.cost_usd
    RETURNING turns),
ins AS (
    INSERT INTO conversation_turns (owner, id, seq, message)
    SELECT $1, $2, up.turns - cardinality($5::bytea[]) + t.n - 1, t.m
    FROM up, unnest($5::bytea[]) WITH ORDINALITY AS t(m, n))
SELECT turns FROM up"""

# The row and its turns in one statement, so from one snapshot (never a count that
# disagrees with the turns read).
_LOAD = f"""
SELECT {_INFO}, system,
       (SELECT array_agg(message ORDER BY seq) FROM conversation_turns t
        WHERE t.owner = c.owner AND t.id = c.id) AS messages
FROM conversations c WHERE owner = $1 AND id = $2"""

_ORDER = "ORDER BY updated_at DESC, id, owner LIMIT"
_LIST_OWNER = f"SELECT {_INFO} FROM conversations WHERE owner = $1 {_ORDER} $2"
_LIST_ALL = f"SELECT {_INFO} FROM conversations {_ORDER} $1"

_SUMMARY = """
SELECT prefix, summary FROM conversation_summaries
WHERE owner = $1 AND prefix = ANY($2::text[])
ORDER BY array_position($2::text[], prefix) LIMIT 1"""

_PUT_SUMMARY = """
INSERT INTO conversation_summaries (owner, prefix, conversation, summary, created_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (owner, prefix) DO UPDATE SET conversation = EXCLUDED.conversation,
    summary = EXCLUDED.summary, created_at = EXCLUDED.created_at"""


# One statement: the conversations idle since `before`, their turns and summaries, and
# every summary written before it. A conversation an append is extending waits for it,
# then is re-checked (READ COMMITTED) and kept, its updated_at now recent.
_PRUNE = """
WITH gone AS (DELETE FROM conversations WHERE updated_at < $1 RETURNING owner, id),
turns AS (DELETE FROM conversation_turns t USING gone
          WHERE t.owner = gone.owner AND t.id = gone.id),
summaries AS (DELETE FROM conversation_summaries s WHERE s.created_at < $1
              OR (s.owner, s.conversation) IN (SELECT owner, id FROM gone))
SELECT count(*) FROM gone"""


def _info(r: Any) -> ConversationInfo:
    return ConversationInfo(owner=r["owner"], id=r["id"], created_at=r["created_at"],
                            updated_at=r["updated_at"], turns=r["turns"], tokens=r["tokens"],
                            cost_usd=r["cost_usd"])


class PostgresConversations:
    def __init__(self, store: Pooled) -> None:
        self._store = store

    async def load(self, owner: str, conversation: str) -> StoredConversation | None:
        r = await self._store.pool.fetchrow(_LOAD, owner, conversation)
        if r is None:
            return None
        return StoredConversation(info=_info(r), system=r["system"],
                                  turns=list(r["messages"] or ()))

    async def append(self, owner: str, conversation: str, system: bytes | None,
                     turns: Sequence[bytes], tokens: int, cost_usd: float,
                     now: float) -> int:
        stored = await self._store.pool.fetchval(_APPEND, owner, conversation, now, system,
                                                 list(turns), tokens, cost_usd)
        return int(stored)

    async def list(self, owner: str | None, limit: int) -> list[ConversationInfo]:
        pool = self._store.pool
        found = (await pool.fetch(_LIST_ALL, limit) if owner is None
                 else await pool.fetch(_LIST_OWNER, owner, limit))
        return [_info(r) for r in found]

    async def delete(self, owner: str, conversation: str) -> bool:
        async with self._store.pool.acquire() as conn, conn.transaction():
            # The row first: it waits for an append in flight and then holds off the
            # next, so the turns deleted below (each statement sees what committed
            # before it) are all there will be.
            found = await conn.fetchval("DELETE FROM conversations WHERE owner = $1 "
                                        "AND id = $2 RETURNING true", owner, conversation)
            await conn.execute("DELETE FROM conversation_turns WHERE owner = $1 AND id = $2",
                               owner, conversation)
            await conn.execute("DELETE FROM conversation_summaries WHERE owner = $1 "
                               "AND conversation = $2", owner, conversation)
        return bool(found)

    async def prune(self, before: float) -> int:
        return int(await self._store.pool.fetchval(_PRUNE, before))

    async def summary(self, owner: str, prefixes: Sequence[str]) -> tuple[str, bytes] | None:
        if not prefixes:
            return None
        r = await self._store.pool.fetchrow(_SUMMARY, owner, list(prefixes))
        return None if r is None else (r["prefix"], r["summary"])

    async def put_summary(self, owner: str, prefix: str, conversation: str | None,
                          summary: bytes, now: float) -> None:
        await self._store.pool.execute(_PUT_SUMMARY, owner, prefix, conversation, summary, now)
