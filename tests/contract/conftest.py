"""Each store implementation must pass the same contract tests. The embedded store
is the only one so far; the shared (Redis + PostgreSQL) store joins the `store`
fixture's parameters when it lands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tollway.store.base import Store
from tollway.store.embedded import EmbeddedStore


@pytest.fixture(params=["embedded"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store = EmbeddedStore(str(tmp_path / "store"))
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def reopen(tmp_path: Path) -> type[EmbeddedStore]:
    return EmbeddedStore
