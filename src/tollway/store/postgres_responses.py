"""The PostgreSQL response store, shared by every replica: a response stored by one
is read, listed and continued by any other."""

from __future__ import annotations

from tollway.store.base import StoredResponse
from tollway.store.postgres_conversations import Pooled

_PUT = """
INSERT INTO responses (owner, id, created_at, response, input_items)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (owner, id) DO UPDATE SET created_at = EXCLUDED.created_at,
    response = EXCLUDED.response, input_items = EXCLUDED.input_items"""


class PostgresResponses:
    def __init__(self, store: Pooled) -> None:
        self._store = store

    async def put(self, response: StoredResponse) -> None:
        r = response
        await self._store.pool.execute(_PUT, r.owner, r.id, r.created_at, r.response,
                                       r.input_items)

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        row = await self._store.pool.fetchrow(
            "SELECT created_at, response, input_items FROM responses "
            "WHERE owner = $1 AND id = $2", owner, response_id)
        if row is None:
            return None
        return StoredResponse(owner, response_id, row["created_at"], row["response"],
                              row["input_items"])

    async def delete(self, owner: str, response_id: str) -> bool:
        found = await self._store.pool.fetchval(
            "DELETE FROM responses WHERE owner = $1 AND id = $2 RETURNING true",
            owner, response_id)
        return bool(found)

    async def prune(self, before: float) -> int:
        status = await self._store.pool.execute(
            "DELETE FROM responses WHERE created_at < $1", before)
        return int(status.rsplit(" ", 1)[1])  # "DELETE <count>"
