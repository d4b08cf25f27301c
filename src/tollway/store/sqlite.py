"""The embedded store's one SQLite connection, used only from its own thread (SQLite
calls block; the event loop never waits on them)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class Db:
    """One SQLite connection used only from its own thread."""

    def __init__(self, path: Path, schema: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollway-sqlite")
        self.conn: sqlite3.Connection = self._pool.submit(self._open, path, schema).result()

    @staticmethod
    def _open(path: Path, schema: str) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(schema)
        return conn

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Synchronously (start-up only)."""
        return self._pool.submit(fn, self.conn).result()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self.conn)

    def close(self) -> None:
        self._pool.submit(self.conn.close).result()
        self._pool.shutdown()
