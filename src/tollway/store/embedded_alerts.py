"""Fired spend alerts in the embedded store's SQLite, newest first."""

from __future__ import annotations

from tollway.store.base import FiredAlert
from tollway.store.sqlite import Db

ALERTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (at REAL NOT NULL, rule TEXT NOT NULL, scope TEXT NOT NULL,
    name TEXT NOT NULL, message TEXT NOT NULL, detail BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_at ON alerts (at);
"""


class EmbeddedAlerts:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def record(self, alert: FiredAlert) -> None:
        a = alert
        await self._db.run(lambda c: c.execute(
            "INSERT INTO alerts (at, rule, scope, name, message, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)", (a.at, a.rule, a.scope, a.name, a.message, a.detail)))

    async def fired(self, since: float, until: float, key: str | None,
                    limit: int) -> list[FiredAlert]:
        only = "" if key is None else " AND scope = 'key' AND name = ?"
        args = (since, until, *(() if key is None else (key,)), limit)
        found = await self._db.run(lambda c: c.execute(
            "SELECT at, rule, scope, name, message, detail FROM alerts "
            f"WHERE at >= ? AND at < ?{only} ORDER BY at DESC, rowid DESC LIMIT ?",
            args).fetchall())
        return [FiredAlert(*r) for r in found]
