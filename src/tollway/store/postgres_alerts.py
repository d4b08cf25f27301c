"""Fired spend alerts in PostgreSQL (migration 0011), shared by the fleet: each fires
once fleet-wide (the once-marks), so each is recorded once."""

from __future__ import annotations

from tollway.store.base import FiredAlert
from tollway.store.postgres_conversations import Pooled


class PostgresAlerts:
    def __init__(self, store: Pooled) -> None:
        self._store = store

    async def record(self, alert: FiredAlert) -> None:
        a = alert
        await self._store.pool.execute(
            "INSERT INTO alerts (at, rule, scope, name, message, detail) "
            "VALUES ($1, $2, $3, $4, $5, convert_from($6::bytea, 'UTF8')::json)",
            a.at, a.rule, a.scope, a.name, a.message, a.detail)

    async def fired(self, since: float, until: float, key: str | None,
                    limit: int) -> list[FiredAlert]:
        only = "" if key is None else " AND scope = 'key' AND name = $4"
        found = await self._store.pool.fetch(
            "SELECT at, rule, scope, name, message, detail::text FROM alerts "
            f"WHERE at >= $1 AND at < $2{only} ORDER BY at DESC, id DESC LIMIT $3",
            since, until, limit, *(() if key is None else (key,)))
        return [FiredAlert(r[0], r[1], r[2], r[3], r[4], r[5].encode()) for r in found]
