"""The response store's contract: every implementation (embedded SQLite, PostgreSQL)
keeps what it was given byte for byte, keeps each owner's responses apart, replaces a
response written again, and deletes for good."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.contract.conftest import PostgresBacked
from tollway.store.base import ResponseStore, Store, StoredResponse
from tollway.store.embedded import EmbeddedStore

if TYPE_CHECKING:
    from tests.contract.conftest import ScratchPostgres


@pytest.fixture(params=["embedded", "postgres"])
async def responses(request: pytest.FixtureRequest, tmp_path: Path,
                    postgres: ScratchPostgres) -> AsyncIterator[ResponseStore]:
    s: Store
    if request.param == "postgres":
        s = await PostgresBacked.open(await postgres.shared(), tmp_path)
    else:
        s = EmbeddedStore(str(tmp_path / "store"))
    try:
        yield s.responses
    finally:
        await s.close()


def stored(owner: str, rid: str, text: str = "hi") -> StoredResponse:
    return StoredResponse(owner, rid, 1.5, f'{{"id":"{rid}","text":"{text}"}}'.encode(),
                          b'[{"type":"message","content":"\\u0000\xc3\xa9"}]')


async def test_a_response_reads_back_as_written(responses: ResponseStore) -> None:
    assert await responses.get("o", "resp_1") is None
    r = stored("o", "resp_1")
    await responses.put(r)
    assert await responses.get("o", "resp_1") == r


async def test_owners_never_cross(responses: ResponseStore) -> None:
    await responses.put(stored("alice", "resp_1"))
    assert await responses.get("bob", "resp_1") is None
    assert not await responses.delete("bob", "resp_1")
    await responses.put(stored("bob", "resp_1", "bob's"))  # the same id, another owner
    got = await responses.get("alice", "resp_1")
    assert got is not None and b"bob" not in got.response


async def test_writing_a_response_again_replaces_it(responses: ResponseStore) -> None:
    await responses.put(stored("o", "resp_1", "first"))
    await responses.put(stored("o", "resp_1", "second"))
    got = await responses.get("o", "resp_1")
    assert got is not None and b"second" in got.response


async def test_delete_is_for_good(responses: ResponseStore) -> None:
    await responses.put(stored("o", "resp_1"))
    await responses.put(stored("o", "resp_2"))
    assert await responses.delete("o", "resp_1")
    assert await responses.get("o", "resp_1") is None
    assert not await responses.delete("o", "resp_1")
    assert await responses.get("o", "resp_2") is not None


async def test_the_embedded_store_keeps_responses_across_a_restart(tmp_path: Path) -> None:
    s = EmbeddedStore(str(tmp_path / "store"))
    await s.responses.put(stored("o", "resp_1"))
    await s.close()
    s = EmbeddedStore(str(tmp_path / "store"))
    try:
        assert await s.responses.get("o", "resp_1") == stored("o", "resp_1")
    finally:
        await s.close()
