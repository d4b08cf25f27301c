"""Throwaway databases on the machine's PostgreSQL, for tests that run gateways on the
shared store."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

PG_ADMIN = os.environ.get("TOLLWAY_TEST_POSTGRES_URL",
                          "postgresql://postgres@127.0.0.1:5432/postgres")


async def run_sql(sql: str) -> None:
    """One statement as the admin user, on the admin database."""
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def url_of(database: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{database}"


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new empty database (its name), dropped afterwards even if still in use."""
    name = f"{prefix}_{secrets.token_hex(5)}"
    asyncio.run(run_sql(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        asyncio.run(run_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        asyncio.run(run_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
