"""The response store's contract: every implementation (embedded SQLite, PostgreSQL)
keeps what it was given byte for byte, keeps each owner's responses apart, replaces a
response written again, and deletes for good."""

from __future__ import annotations

import secrets
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


@pytest.fixture
def o() -> str:
    """An owner of the test's own: the PostgreSQL database is shared by the session."""
    return "owner-" + secrets.token_hex(4)


def stored(owner: str, rid: str, text: str = "hi") -> StoredResponse:
    return StoredResponse(owner, rid, 1.5, f'{{"id":"{rid}","text":"{text}"}}'.encode(),
                          b'[{"type":"message","content":"\\u0000\xc3\xa9"}]')


async def test_a_response_reads_back_as_written(responses: ResponseStore, o: str) -> None:
    assert await responses.get(o, "resp_1") is None
    r = stored(o, "resp_1")
    await responses.put(r)
    assert await responses.get(o, "resp_1") == r


async def test_owners_never_cross(responses: ResponseStore, o: str) -> None:
    await responses.put(stored(o + "/alice", "resp_1"))
    assert await responses.get(o + "/bob", "resp_1") is None
    assert not await responses.delete(o + "/bob", "resp_1")
    await responses.put(stored(o + "/bob", "resp_1", "bob's"))  # the same id, another owner
    got = await responses.get(o + "/alice", "resp_1")
    assert got is not None and b"bob" not in got.response


async def test_writing_a_response_again_replaces_it(responses: ResponseStore, o: str) -> None:
    await responses.put(stored(o, "resp_1", "first"))
    await responses.put(stored(o, "resp_1", "second"))
    got = await responses.get(o, "resp_1")
    assert got is not None and b"second" in got.response


async def test_delete_is_for_good(responses: ResponseStore, o: str) -> None:
    await responses.put(stored(o, "resp_1"))
    await responses.put(stored(o, "resp_2"))
    assert await responses.delete(o, "resp_1")
    assert await responses.get(o, "resp_1") is None
    assert not await responses.delete(o, "resp_1")
    assert await responses.get(o, "resp_2") is not None


async def test_prune_deletes_what_was_created_before(responses: ResponseStore, o: str) -> None:
    old, new = stored(o, "resp_old"), stored(o, "resp_new")
    # Before every other test's responses (created at 1.5): only these are in reach.
    await responses.put(StoredResponse(old.owner, old.id, -20.0, old.response, old.input_items))
    await responses.put(StoredResponse(new.owner, new.id, -10.0, new.response, new.input_items))
    assert await responses.prune(-15.0) == 1
    assert await responses.get(o, "resp_old") is None
    assert await responses.get(o, "resp_new") is not None
    assert await responses.prune(-15.0) == 0


async def test_the_embedded_store_keeps_responses_across_a_restart(tmp_path: Path,
                                                                   o: str) -> None:
    s = EmbeddedStore(str(tmp_path / "store"))
    await s.responses.put(stored(o, "resp_1"))
    await s.close()
    s = EmbeddedStore(str(tmp_path / "store"))
    try:
        assert await s.responses.get(o, "resp_1") == stored(o, "resp_1")
    finally:
        await s.close()
