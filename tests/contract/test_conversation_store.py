"""The conversation store's contract: every implementation (embedded SQLite, PostgreSQL)
keeps each owner's conversations apart, appends turns in order without interleaving
concurrent appends, lists the most recently updated first, deletes for good (with the
summaries tied to a conversation) and finds summaries by history prefix."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.contract.conftest import PostgresBacked
from tollway.store.base import ConversationInfo, ConversationStore, Store
from tollway.store.embedded import EmbeddedStore

if TYPE_CHECKING:
    from tests.contract.conftest import ScratchPostgres


@pytest.fixture(params=["embedded", "postgres"])
async def conversations(request: pytest.FixtureRequest, tmp_path: Path,
                        postgres: ScratchPostgres) -> AsyncIterator[ConversationStore]:
    s: Store
    if request.param == "postgres":
        s = await PostgresBacked.open(await postgres.shared(), tmp_path)
    else:
        s = EmbeddedStore(str(tmp_path / "store"))
    try:
        yield s.conversations
    finally:
        await s.close()


async def test_an_unknown_conversation_is_none(conversations: ConversationStore) -> None:
    assert await conversations.load("o", "c") is None
    await conversations.append("o", "c", None, [b"t0"], 1, 0.0, now=1.0)
    assert await conversations.load("o", "other") is None


async def test_appends_create_then_extend_in_order(conversations: ConversationStore) -> None:
    cs = conversations
    assert await cs.append("o", "c", b"[sys]", [b"t0", b"\x00\xff"], 10, 0.25, now=100.0) == 2
    got = await cs.load("o", "c")
    assert got is not None
    assert got.info == ConversationInfo(owner="o", id="c", created_at=100.0, updated_at=100.0,
                                        turns=2, tokens=10, cost_usd=0.25)
    assert got.system == b"[sys]" and got.turns == [b"t0", b"\x00\xff"]

    assert await cs.append("o", "c", None, [b"t2"], 5, 0.5, now=200.0) == 3
    assert await cs.append("o", "c", None, [b"t3", b"t4"], 1, 0.125, now=300.0) == 5
    got = await cs.load("o", "c")
    assert got is not None
    assert got.info == ConversationInfo(owner="o", id="c", created_at=100.0, updated_at=300.0,
                                        turns=5, tokens=16, cost_usd=0.875)
    assert got.turns == [b"t0", b"\x00\xff", b"t2", b"t3", b"t4"]


async def test_an_append_of_no_turns_still_counts_its_cost(
        conversations: ConversationStore) -> None:
    assert await conversations.append("o", "c", None, [], 7, 0.5, now=1.0) == 0
    got = await conversations.load("o", "c")
    assert got is not None and got.turns == [] and got.system is None
    assert (got.info.turns, got.info.tokens, got.info.cost_usd) == (0, 7, 0.5)


async def test_the_system_prompt_is_replaced_only_when_given(
        conversations: ConversationStore) -> None:
    cs = conversations

    async def system() -> bytes | None:
        got = await cs.load("o", "c")
        assert got is not None
        return got.system

    await cs.append("o", "c", None, [b"t0"], 0, 0.0, now=1.0)
    assert await system() is None
    await cs.append("o", "c", b"s1", [b"t1"], 0, 0.0, now=2.0)
    assert await system() == b"s1"
    await cs.append("o", "c", None, [b"t2"], 0, 0.0, now=3.0)
    assert await system() == b"s1"
    await cs.append("o", "c", b"s2", [b"t3"], 0, 0.0, now=4.0)
    assert await system() == b"s2"


async def test_owners_never_cross(conversations: ConversationStore) -> None:
    cs = conversations
    await cs.append("alice", "c", b"sa", [b"a0"], 1, 0.0, now=1.0)
    assert await cs.append("bob", "c", b"sb", [b"b0", b"b1"], 2, 0.0, now=2.0) == 2
    assert await cs.append("alice", "c", None, [b"a1"], 1, 0.0, now=3.0) == 2
    await cs.put_summary("bob", "p", "c", b"bob's", now=4.0)

    alice, bob = await cs.load("alice", "c"), await cs.load("bob", "c")
    assert alice is not None and bob is not None
    assert (alice.system, alice.turns, alice.info.tokens) == (b"sa", [b"a0", b"a1"], 2)
    assert (bob.system, bob.turns, bob.info.updated_at) == (b"sb", [b"b0", b"b1"], 2.0)

    assert await cs.delete("carol", "c") is False
    assert await cs.delete("alice", "c") is True
    assert await cs.load("alice", "c") is None
    bob_after = await cs.load("bob", "c")
    assert bob_after is not None and bob_after.turns == [b"b0", b"b1"]
    assert await cs.summary("bob", ["p"]) == ("p", b"bob's")


async def test_concurrent_appends_are_never_interleaved(
        conversations: ConversationStore) -> None:
    calls, each = 20, 3

    async def one(i: int) -> int:
        return await conversations.append("o", "c", None,
                                          [b"%d/%d" % (i, k) for k in range(each)],
                                          i, 0.5, now=float(i))

    counts = await asyncio.gather(*(one(i) for i in range(calls)))
    # Each call saw the others either wholly before or wholly after it.
    assert sorted(counts) == [each * (n + 1) for n in range(calls)]
    got = await conversations.load("o", "c")
    assert got is not None
    assert got.info.turns == len(got.turns) == calls * each
    assert got.info.tokens == sum(range(calls)) and got.info.cost_usd == 0.5 * calls
    for start in range(0, len(got.turns), each):
        call = got.turns[start].split(b"/")[0]
        assert got.turns[start:start + each] == [call + b"/%d" % k for k in range(each)]
    assert len({t.split(b"/")[0] for t in got.turns}) == calls


async def test_the_most_recently_updated_are_listed_first(
        conversations: ConversationStore) -> None:
    cs = conversations
    await cs.append("a", "c1", None, [b"x"], 0, 0.0, now=1.0)
    await cs.append("a", "c2", None, [b"x"], 0, 0.0, now=2.0)
    await cs.append("b", "c3", None, [b"x"], 3, 0.25, now=3.0)
    await cs.append("a", "c1", None, [b"y"], 0, 0.0, now=4.0)

    assert [c.id for c in await cs.list("a", 10)] == ["c1", "c2"]
    everyone = await cs.list(None, 10)
    assert [(c.owner, c.id) for c in everyone] == [("a", "c1"), ("b", "c3"), ("a", "c2")]
    assert everyone[0] == ConversationInfo(owner="a", id="c1", created_at=1.0, updated_at=4.0,
                                           turns=2, tokens=0, cost_usd=0.0)
    assert everyone[1].tokens == 3 and everyone[1].cost_usd == 0.25
    assert [c.id for c in await cs.list(None, 2)] == ["c1", "c3"]
    assert [c.id for c in await cs.list("a", 1)] == ["c1"]
    assert await cs.list("nobody", 10) == []


async def test_delete_takes_the_turns_and_tied_summaries(
        conversations: ConversationStore) -> None:
    cs = conversations
    await cs.append("o", "c", b"sys", [b"t0", b"t1"], 1, 0.0, now=1.0)
    await cs.append("o", "d", None, [b"d0"], 1, 0.0, now=2.0)
    await cs.put_summary("o", "tied", "c", b"s-c", now=3.0)
    await cs.put_summary("o", "loose", None, b"s-none", now=3.0)
    await cs.put_summary("o", "other", "d", b"s-d", now=3.0)

    assert await cs.delete("o", "c") is True
    assert await cs.load("o", "c") is None
    assert await cs.summary("o", ["tied"]) is None
    assert await cs.summary("o", ["loose"]) == ("loose", b"s-none")
    assert await cs.summary("o", ["other"]) == ("other", b"s-d")
    assert [c.id for c in await cs.list("o", 10)] == ["d"]
    assert await cs.delete("o", "c") is False

    # The id can be used again, and starts empty: none of the old turns are left.
    assert await cs.append("o", "c", None, [b"new"], 2, 0.0, now=5.0) == 1
    again = await cs.load("o", "c")
    assert again is not None and again.turns == [b"new"] and again.system is None
    assert (again.info.created_at, again.info.tokens) == (5.0, 2)


async def test_prune_deletes_what_has_been_idle_since(
        conversations: ConversationStore) -> None:
    cs = conversations
    await cs.append("o", "old", None, [b"stale turn"], 1, 0.0, now=100.0)
    await cs.append("o", "kept", None, [b"t0"], 1, 0.0, now=100.0)
    await cs.append("o", "kept", None, [b"t1"], 1, 0.0, now=500.0)  # touched since
    await cs.put_summary("o", "p-old-conv", "old", b"s1", now=400.0)
    await cs.put_summary("o", "p-loose-old", None, b"s2", now=100.0)
    await cs.put_summary("o", "p-loose-new", None, b"s3", now=400.0)
    await cs.put_summary("o", "p-kept", "kept", b"s4", now=400.0)
    assert await cs.prune(before=300.0) == 1
    assert await cs.load("o", "old") is None
    kept = await cs.load("o", "kept")
    assert kept is not None and kept.turns == [b"t0", b"t1"]
    assert await cs.summary("o", ["p-old-conv", "p-loose-old"]) is None
    assert await cs.summary("o", ["p-loose-new"]) == ("p-loose-new", b"s3")
    assert await cs.summary("o", ["p-kept"]) == ("p-kept", b"s4")
    assert await cs.prune(before=300.0) == 0


async def test_the_first_stored_prefix_wins(conversations: ConversationStore) -> None:
    cs = conversations
    await cs.put_summary("o", "p1", None, b"s1", now=1.0)
    await cs.put_summary("o", "p2", "c", b"s2", now=1.0)
    await cs.put_summary("other", "p3", None, b"theirs", now=1.0)

    assert await cs.summary("o", ["p0", "p2", "p1"]) == ("p2", b"s2")
    assert await cs.summary("o", ["p1", "p2"]) == ("p1", b"s1")
    assert await cs.summary("o", ["p3"]) is None  # another owner's
    assert await cs.summary("o", ["p9"]) is None
    assert await cs.summary("o", []) is None

    await cs.put_summary("o", "p1", None, b"s1 again", now=2.0)
    await cs.put_summary("other", "p1", None, b"their p1", now=2.0)
    assert await cs.summary("o", ["p1"]) == ("p1", b"s1 again")
    assert await cs.summary("other", ["p1", "p3"]) == ("p1", b"their p1")


# Embedded only: what is on disk, and a restart.

MARKER = b"tollway-delete-marker-5d1c"


def _on_disk(folder: Path) -> bytes:
    """The database file and its write-ahead log, as bytes."""
    return b"".join(p.read_bytes() for p in sorted(folder.glob("tollway.db*"))
                    if not p.name.endswith("-shm"))  # the -shm holds only an index


def _checkpoint(folder: Path) -> None:
    with sqlite3.connect(folder / "tollway.db") as c:  # a second connection, as any tool
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


async def test_a_deleted_conversation_is_gone_from_the_database_file(tmp_path: Path) -> None:
    """(Some SQLite builds, Debian's among them, have secure_delete on by default; with
    it off, or without the delete's checkpoint, the marker is still found here.)"""
    s = EmbeddedStore(str(tmp_path))
    try:
        cs = s.conversations
        # Enough to fill pages, free whole ones and spill a turn onto overflow pages.
        turns = [b'{"content": "%s %d"}' % (MARKER, i) for i in range(300)]
        turns.append(b'{"content": "%s"}' % (MARKER * 2000))
        await cs.append("o", "c", b'[{"content": "%s system"}]' % MARKER, turns, 1, 0.0, now=1.0)
        await cs.put_summary("o", "p", "c", b"summary of " + MARKER, now=2.0)
        await cs.append("o", "kept", None, [b"still here"], 1, 0.0, now=3.0)
        _checkpoint(tmp_path)
        assert MARKER in _on_disk(tmp_path)  # (so its absence below means something)

        assert await cs.delete("o", "c") is True
        assert MARKER not in _on_disk(tmp_path)  # the delete itself leaves none behind
        _checkpoint(tmp_path)
        assert MARKER not in _on_disk(tmp_path)
        assert b"still here" in _on_disk(tmp_path)
    finally:
        await s.close()
    assert MARKER not in _on_disk(tmp_path)


async def test_embedded_conversations_survive_a_restart(
        tmp_path: Path, reopen: type[EmbeddedStore]) -> None:
    s = reopen(str(tmp_path))
    try:
        await s.conversations.append("o", "c", b"sys", [b"t0", b"t1"], 3, 0.5, now=1.0)
        await s.conversations.put_summary("o", "p", "c", b"sum", now=2.0)
        before = await s.conversations.load("o", "c")
    finally:
        await s.close()
    s = reopen(str(tmp_path))
    try:
        assert await s.conversations.load("o", "c") == before
        assert await s.conversations.summary("o", ["p"]) == ("p", b"sum")
        assert await s.conversations.append("o", "c", None, [b"t2"], 0, 0.0, now=3.0) == 3
        assert [c.id for c in await s.conversations.list("o", 10)] == ["c"]
    finally:
        await s.close()
