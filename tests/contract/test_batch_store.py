"""The batch store's contract: every implementation (embedded SQLite with its files
directory, PostgreSQL) keeps files and batches byte for byte and by owner, hands each
line to one claimer at a time — across two stores on the same database too — fences a
worker whose lease was taken over, lets exactly one caller finalize a batch, and deletes
files for good."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tollway.store.base import BatchLine, BatchRecord, BatchStore, StoredFile
from tollway.store.embedded import EmbeddedStore
from tollway.store.postgres import PostgresStore

if TYPE_CHECKING:
    from tests.contract.conftest import ScratchPostgres

Opener = Callable[[], Awaitable[BatchStore]]


@pytest.fixture(params=["embedded", "postgres"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path,
                 postgres: ScratchPostgres) -> AsyncIterator[Opener]:
    """Opens another store on the same database (as another process or replica would)."""
    stores: list[EmbeddedStore | PostgresStore] = []
    url = await postgres.shared() if request.param == "postgres" else ""

    async def open_one() -> BatchStore:
        s: EmbeddedStore | PostgresStore
        if url:
            s = PostgresStore(url)
            await s.open()
        else:
            s = EmbeddedStore(str(tmp_path / "store"))
        stores.append(s)
        return s.batches
    try:
        yield open_one
    finally:
        for s in stores:
            await s.close()


@pytest.fixture
async def bs(opener: Opener) -> BatchStore:
    return await opener()


@pytest.fixture
def files_dir(tmp_path: Path) -> Path:
    """Where the embedded store keeps file contents (nothing there for PostgreSQL)."""
    return tmp_path / "store" / "files"


@pytest.fixture
def o() -> str:
    return "owner-" + secrets.token_hex(4)


def a_file(owner: str, fid: str, content: bytes, *, at: float = 1.0,
           purpose: str = "batch") -> StoredFile:
    return StoredFile(owner, fid, purpose, f"{fid}.jsonl", len(content), at)


def a_batch(owner: str, bid: str, n: int, *, at: float = 1.0, status: str = "in_progress",
            input_file_id: str = "file-in") -> tuple[BatchRecord, list[BatchLine]]:
    batch = BatchRecord(owner, bid, "/v1/chat/completions", input_file_id,
                        status,  # type: ignore[arg-type]
                        at, at + 86400, n, 0, 0, 0, 0, f"hold-{bid}", b'{"metadata":{}}')
    lines = [BatchLine(bid, i, f"req-{i}", f'{{"n":{i},"x":"\\u0000\xc3\xa9"}}'.encode(),
                       "pending", None, 0, 0) for i in range(n)]
    return batch, lines


async def new_batch(bs: BatchStore, owner: str, bid: str, n: int, **kw: object
                    ) -> BatchRecord:
    batch, lines = a_batch(owner, bid, n, **kw)  # type: ignore[arg-type]
    await bs.create_batch(batch, lines)
    return batch


def on_disk(files_dir: Path) -> list[str]:
    """The file contents the embedded store holds (none for PostgreSQL)."""
    return sorted(p.name for p in files_dir.iterdir()) if files_dir.exists() else []


async def claim_all(bs: BatchStore, worker: str, now: float = 10.0) -> list[BatchLine]:
    return await bs.claim(worker, 100_000, 60.0, now)


# Files.

async def test_a_file_reads_back_as_written_and_only_by_its_owner(bs: BatchStore,
                                                                  o: str) -> None:
    content = b'{"custom_id":"a"}\n\x00\xff\xfe binary too\n'
    f = a_file(o, "file-abc", content)
    await bs.put_file(f, content)
    assert await bs.get_file(o, "file-abc") == f
    assert await bs.file_content(o, "file-abc") == content
    assert await bs.get_file(o + "x", "file-abc") is None
    assert await bs.file_content(o + "x", "file-abc") is None
    assert not await bs.delete_file(o + "x", "file-abc")
    assert await bs.file_content(o, "file-abc") == content


async def test_a_file_id_is_used_once(bs: BatchStore, o: str) -> None:
    await bs.put_file(a_file(o, "file-1", b"first"), b"first")
    with pytest.raises(Exception):  # noqa: B017  (each database raises its own)
        await bs.put_file(a_file(o + "x", "file-1", b"other"), b"other")
    assert await bs.file_content(o, "file-1") == b"first"
    assert await bs.get_file(o + "x", "file-1") is None


async def test_a_file_must_be_what_it_says(bs: BatchStore, o: str) -> None:
    with pytest.raises(ValueError):
        await bs.put_file(a_file(o, "file-1", b"four"), b"three")
    with pytest.raises(ValueError):
        await bs.put_file(a_file(o, "../escape", b"x"), b"x")
    assert await bs.get_file(o, "file-1") is None


async def test_files_list_newest_first_by_purpose_and_page(bs: BatchStore, o: str) -> None:
    for i in range(5):
        purpose = "batch" if i % 2 == 0 else "batch_output"
        await bs.put_file(a_file(o, f"file-{i}", b"x", at=float(i), purpose=purpose), b"x")
    await bs.put_file(a_file(o + "x", "file-other", b"x", at=9.0), b"x")

    def ids(files: list[StoredFile]) -> list[str]:
        return [f.id for f in files]
    assert ids(await bs.list_files(o, None, None, 10)) == [f"file-{i}" for i in (4, 3, 2, 1, 0)]
    assert ids(await bs.list_files(o, "batch", None, 10)) == ["file-4", "file-2", "file-0"]
    assert ids(await bs.list_files(o, None, None, 2)) == ["file-4", "file-3"]
    assert ids(await bs.list_files(o, None, "file-3", 2)) == ["file-2", "file-1"]
    assert ids(await bs.list_files(o, "batch", "file-4", 10)) == ["file-2", "file-0"]
    assert await bs.list_files(o, None, "file-other", 10) == []  # another owner's cursor


async def test_deleting_a_file_removes_its_content(bs: BatchStore, o: str,
                                                  files_dir: Path) -> None:
    await bs.put_file(a_file(o, "file-1", b"secret"), b"secret")
    await bs.put_file(a_file(o, "file-2", b"kept"), b"kept")
    assert await bs.delete_file(o, "file-1")
    assert not await bs.delete_file(o, "file-1")
    assert await bs.get_file(o, "file-1") is None
    assert await bs.file_content(o, "file-1") is None
    assert await bs.file_content(o, "file-2") == b"kept"
    assert on_disk(files_dir) in ([], ["file-2"])  # [] for PostgreSQL: its contents are rows


# Batches.

async def test_a_batch_and_its_lines_read_back(bs: BatchStore, o: str) -> None:
    batch, lines = a_batch(o, "batch_1", 5)
    await bs.create_batch(batch, lines)
    assert await bs.get_batch(o, "batch_1") == batch
    assert await bs.get_batch(o + "x", "batch_1") is None
    assert await bs.lines("batch_1", -1, 10) == lines
    assert await bs.lines("batch_1", -1, 2) == lines[:2]
    assert await bs.lines("batch_1", 1, 2) == lines[2:4]
    assert await bs.lines("batch_1", 4, 2) == []


async def test_a_batch_must_count_its_lines(bs: BatchStore, o: str) -> None:
    batch, lines = a_batch(o, "batch_1", 3)
    with pytest.raises(ValueError):
        await bs.create_batch(replace(batch, total=2), lines)
    with pytest.raises(ValueError):
        await bs.create_batch(replace(batch, total=0), [])
    with pytest.raises(ValueError):
        await bs.create_batch(batch, [*lines[:2], replace(lines[2], batch_id="batch_2")])
    assert await bs.get_batch(o, "batch_1") is None


async def test_ten_thousand_lines_are_created_in_well_under_two_seconds(
        bs: BatchStore, o: str) -> None:
    batch, lines = a_batch(o, "batch_big", 10_000)
    lines = [replace(ln, body=ln.body * 20) for ln in lines]  # ~1 KB a line
    start = time.perf_counter()
    await bs.create_batch(batch, lines)
    took = time.perf_counter() - start
    assert took < 2.0, f"{took:.2f}s"
    assert await bs.lines("batch_big", 9_997, 10) == lines[9_998:]
    assert len(await claim_all(bs, "w")) == 10_000


async def test_a_batch_whose_lines_fail_to_write_is_not_created(bs: BatchStore,
                                                                o: str) -> None:
    batch, lines = a_batch(o, "batch_1", 3)
    with pytest.raises(Exception):  # noqa: B017  (two lines with one index)
        await bs.create_batch(batch, [lines[0], lines[1], replace(lines[2], index=1)])
    assert await bs.get_batch(o, "batch_1") is None
    assert await bs.lines("batch_1", -1, 10) == []


async def test_batches_list_newest_first_and_page(bs: BatchStore, o: str) -> None:
    for i in range(5):
        await new_batch(bs, o, f"batch_{i}", 1, at=float(i))
    await new_batch(bs, o + "x", "batch_other", 1, at=9.0)

    async def ids(after: str | None, limit: int) -> list[str]:
        return [b.id for b in await bs.list_batches(o, after, limit)]
    assert await ids(None, 10) == [f"batch_{i}" for i in (4, 3, 2, 1, 0)]
    assert await ids(None, 2) == ["batch_4", "batch_3"]
    assert await ids("batch_3", 2) == ["batch_2", "batch_1"]
    assert await ids("batch_0", 2) == []
    assert await ids("batch_other", 2) == []


async def test_batches_list_by_id_prefix(bs: BatchStore, o: str) -> None:
    for i, bid in enumerate(["batch_1", "msgbatch_1", "batch_2", "msgbatch_2"]):
        await new_batch(bs, o, bid, 1, at=float(i))

    async def ids(after: str | None, prefix: str) -> list[str]:
        return [b.id for b in await bs.list_batches(o, after, 10, prefix)]
    assert await ids(None, "batch_") == ["batch_2", "batch_1"]
    assert await ids(None, "msgbatch_") == ["msgbatch_2", "msgbatch_1"]
    assert await ids("msgbatch_2", "msgbatch_") == ["msgbatch_1"]
    assert await ids(None, "") == ["msgbatch_2", "batch_2", "msgbatch_1", "batch_1"]


async def test_set_status_compares_and_sets(bs: BatchStore, o: str) -> None:
    await new_batch(bs, o, "batch_1", 2, status="validating")
    assert not await bs.set_status(o, "batch_1", "failed", expect={"in_progress"})
    assert not await bs.set_status(o + "x", "batch_1", "in_progress", expect={"validating"})
    assert await bs.set_status(o, "batch_1", "in_progress", expect={"validating"})
    got = await bs.get_batch(o, "batch_1")
    assert got is not None and got.status == "in_progress" and got.meta == b'{"metadata":{}}'
    assert await bs.set_status(o, "batch_1", "failed", expect={"validating", "in_progress"},
                               meta=b'{"errors":[1]}')
    got = await bs.get_batch(o, "batch_1")
    assert got is not None and got.status == "failed" and got.meta == b'{"errors":[1]}'


# Claims.

async def test_claims_take_the_oldest_batch_first_in_index_order(bs: BatchStore,
                                                                 o: str) -> None:
    await new_batch(bs, o, "batch_new", 2, at=2.0)
    await new_batch(bs, o, "batch_old", 3, at=1.0)
    await new_batch(bs, o, "batch_waiting", 2, at=0.5, status="validating")
    first = await bs.claim("w1", 2, 60.0, 10.0)
    assert [(ln.batch_id, ln.index) for ln in first] == [("batch_old", 0), ("batch_old", 1)]
    assert all(ln.state == "running" and ln.attempts == 1 for ln in first)
    assert first[0].custom_id == "req-0" and first[0].body.startswith(b'{"n":0')
    rest = await bs.claim("w2", 10, 60.0, 10.0)
    assert [(ln.batch_id, ln.index) for ln in rest] == [
        ("batch_old", 2), ("batch_new", 0), ("batch_new", 1)]
    assert await bs.claim("w3", 10, 60.0, 10.0) == []  # the validating batch waits
    assert await bs.set_status(o, "batch_waiting", "in_progress", expect={"validating"})
    assert [ln.index for ln in await bs.claim("w3", 10, 60.0, 10.0)] == [0, 1]


async def test_a_claim_may_take_from_one_batch_only(bs: BatchStore, o: str) -> None:
    await new_batch(bs, o, "batch_old", 2, at=1.0)
    await new_batch(bs, o, "batch_new", 3, at=2.0)
    mine = await bs.claim("w1", 10, 60.0, 10.0, only="batch_new")
    assert [(ln.batch_id, ln.index) for ln in mine] == [("batch_new", i) for i in range(3)]
    assert await bs.claim("w1", 10, 60.0, 10.0, only="batch_new") == []
    assert [ln.batch_id for ln in await bs.claim("w2", 10, 60.0, 10.0)] == ["batch_old"] * 2


async def test_a_dead_workers_line_is_taken_over_once_its_lease_ends(bs: BatchStore,
                                                                    o: str) -> None:
    await new_batch(bs, o, "batch_1", 2)
    (line,) = await bs.claim("dead", 1, 30.0, 100.0)
    assert [ln.index for ln in await bs.claim("live", 5, 30.0, 129.0)] == [1]
    assert await bs.claim("live", 5, 30.0, 129.0) == []  # the lease still runs
    (again,) = await bs.claim("live", 5, 30.0, 130.0)
    assert (again.index, again.attempts) == (line.index, 2)
    # The dead worker was only slow: its answer comes too late and is refused.
    assert await bs.finish("batch_1", 0, "dead", "done", b'{"late":1}', 5) == "refused"
    assert await bs.finish("batch_1", 0, "live", "done", b'{"ok":1}', 7) == "recorded"
    (stored,) = await bs.lines("batch_1", -1, 1)
    assert (stored.state, stored.result, stored.cost_pico) == ("done", b'{"ok":1}', 7)
    got = await bs.get_batch(o, "batch_1")
    assert got is not None and (got.completed, got.cost_pico) == (1, 7)


async def test_two_claimers_on_one_database_never_share_a_line(opener: Opener,
                                                               o: str) -> None:
    a, b = await opener(), await opener()
    for i in range(3):
        await new_batch(a, o, f"batch_{i}", 300, at=float(i))
    got: dict[str, list[tuple[str, int]]] = {"a": [], "b": []}
    # Both claim at once, then each goes on as fast as it can. (SQLite's busy wait
    # sleeps, so without the barrier one connection may take every line before the
    # other wakes: fine for correctness, but then nothing ran side by side.)
    first = asyncio.Barrier(2)

    async def drain(bs: BatchStore, name: str) -> None:
        while lines := await bs.claim(name, 7, 60.0, 10.0):
            got[name] += [(ln.batch_id, ln.index) for ln in lines]
            if len(got[name]) == len(lines):  # its first claim
                await first.wait()
    await asyncio.gather(drain(a, "a"), drain(b, "b"))
    everything = got["a"] + got["b"]
    assert len(everything) == len(set(everything)) == 900
    assert got["a"] and got["b"]
    for i in range(3):  # and each line was claimed exactly once
        lines = await a.lines(f"batch_{i}", -1, 1000)
        assert {(ln.state, ln.attempts) for ln in lines} == {("running", 1)}


async def test_the_last_finish_moves_the_batch_to_finalizing_exactly_once(
        opener: Opener, o: str) -> None:
    a, b = await opener(), await opener()
    await new_batch(a, o, "batch_1", 200)
    lines = await claim_all(a, "w")
    results = await asyncio.gather(*(
        (a if ln.index % 2 else b).finish(
            "batch_1", ln.index, "w", "failed" if ln.index % 10 == 0 else "done",
            b'{"i":%d}' % ln.index, ln.index)
        for ln in lines))
    assert results.count("last") == 1 and results.count("recorded") == 199
    got = await a.get_batch(o, "batch_1")
    assert got is not None
    assert (got.status, got.completed, got.failed, got.cancelled) == ("finalizing", 180, 20, 0)
    assert got.cost_pico == sum(range(200)) and got.settled
    assert await a.claim("w2", 10, 60.0, 1e9) == []
    assert await a.finish("batch_1", 0, "w", "done", b"{}", 1) == "refused"  # settled


async def test_finish_settles_only_running_lines_and_known_states(bs: BatchStore,
                                                                  o: str) -> None:
    await new_batch(bs, o, "batch_1", 2)
    assert await bs.finish("batch_1", 0, "w", "done", b"{}", 1) == "refused"  # not claimed
    await bs.claim("w", 1, 60.0, 10.0)
    with pytest.raises(ValueError):
        await bs.finish("batch_1", 0, "w", "running", None, 0)
    assert await bs.finish("batch_9", 0, "w", "done", b"{}", 1) == "refused"
    assert await bs.finish("batch_1", 0, "w", "done", b"{}", 1) == "recorded"
    assert await bs.finish("batch_1", 0, "w", "done", b"{}", 1) == "refused"  # twice
    got = await bs.get_batch(o, "batch_1")
    assert got is not None and (got.status, got.completed, got.cost_pico) == (
        "in_progress", 1, 1)


# Cancelling.

async def test_cancel_cancels_pending_lines_and_running_ones_finish(bs: BatchStore,
                                                                    o: str) -> None:
    await new_batch(bs, o, "batch_1", 5)
    running = await bs.claim("w", 2, 60.0, 10.0)
    assert await bs.cancel(o + "x", "batch_1") is None
    cancelled = await bs.cancel(o, "batch_1", meta=b'{"cancelling_at":11}')
    assert cancelled is not None and not cancelled.last
    got = cancelled.batch
    assert (got.status, got.cancelled, got.meta) == ("cancelling", 3, b'{"cancelling_at":11}')
    assert [ln.state for ln in await bs.lines("batch_1", -1, 10)] == [
        "running", "running", "cancelled", "cancelled", "cancelled"]
    assert await bs.claim("w2", 10, 60.0, 1e9) == []  # nothing more runs
    assert await bs.finish("batch_1", running[0].index, "w", "done", b"{}", 3) == "recorded"
    assert await bs.finish("batch_1", running[1].index, "w", "failed", b"{}", 0) == "last"
    got2 = await bs.get_batch(o, "batch_1")
    assert got2 is not None
    assert (got2.status, got2.completed, got2.failed, got2.cancelled) == (
        "cancelling", 1, 1, 3)
    again = await bs.cancel(o, "batch_1", meta=b"{}")  # changes nothing
    assert again is not None and not again.last and again.batch == got2


async def test_cancelling_a_batch_with_nothing_running_settles_it(bs: BatchStore,
                                                                  o: str) -> None:
    await new_batch(bs, o, "batch_1", 3, status="validating")
    cancelled = await bs.cancel(o, "batch_1")
    assert cancelled is not None and cancelled.last
    assert (cancelled.batch.status, cancelled.batch.cancelled) == ("cancelling", 3)


async def test_an_ended_batch_is_not_cancelled(bs: BatchStore, o: str) -> None:
    await new_batch(bs, o, "batch_1", 1)
    await bs.claim("w", 1, 60.0, 10.0)
    assert await bs.finish("batch_1", 0, "w", "done", b"{}", 1) == "last"
    cancelled = await bs.cancel(o, "batch_1")
    assert cancelled is not None and not cancelled.last
    assert (cancelled.batch.status, cancelled.batch.cancelled) == ("finalizing", 0)


async def test_a_dead_workers_lines_in_a_cancelling_batch_are_cancelled(
        bs: BatchStore, o: str) -> None:
    await new_batch(bs, o, "batch_1", 3)
    await bs.claim("dead", 2, 30.0, 100.0)
    assert not await bs.cancel_stale("batch_1", 200.0)  # not cancelling: claims take over
    await bs.cancel(o, "batch_1")
    assert not await bs.cancel_stale("batch_1", 129.0)  # the lease still runs
    assert await bs.cancel_stale("batch_1", 130.0)  # settled its last lines
    assert not await bs.cancel_stale("batch_1", 130.0)
    assert await bs.finish("batch_1", 0, "dead", "done", b"{}", 1) == "refused"
    got = await bs.get_batch(o, "batch_1")
    assert got is not None and (got.status, got.cancelled, got.completed) == (
        "cancelling", 3, 0)


# What a restart resumes, and retention.

async def test_active_lists_what_to_resume_oldest_first(bs: BatchStore, o: str) -> None:
    statuses = ["completed", "cancelling", "validating", "failed", "finalizing",
                "in_progress", "expired", "cancelled"]
    for i, status in enumerate(statuses):
        await new_batch(bs, o, f"batch_{i}", 1, at=float(10 - i), status=status)
    assert [b.status for b in await bs.active(10)] == [
        "in_progress", "finalizing", "validating", "cancelling"]
    assert len(await bs.active(2)) == 2


async def test_prune_deletes_ended_batches_and_old_files_for_good(
        bs: BatchStore, o: str, files_dir: Path) -> None:
    for fid, at in [("file-in-old", 1.0), ("file-out-old", 2.0), ("file-in-live", 1.0),
                    ("file-new", 30.0)]:
        await bs.put_file(a_file(o, fid, fid.encode(), at=at), fid.encode())
    await new_batch(bs, o, "batch_old", 2, at=1.0, status="completed",
                    input_file_id="file-in-old")
    await new_batch(bs, o, "batch_live", 2, at=1.0, input_file_id="file-in-live")
    await new_batch(bs, o, "batch_new", 2, at=30.0, status="cancelled",
                    input_file_id="file-new")
    assert await bs.prune(20.0) == 1
    assert await bs.get_batch(o, "batch_old") is None
    assert await bs.lines("batch_old", -1, 10) == []
    assert await bs.get_batch(o, "batch_live") is not None
    assert await bs.get_batch(o, "batch_new") is not None
    assert [f.id for f in await bs.list_files(o, None, None, 10)] == [
        "file-new", "file-in-live"]
    assert await bs.file_content(o, "file-in-old") is None
    assert on_disk(files_dir) in ([], ["file-in-live", "file-new"])
    assert await bs.prune(20.0) == 0


async def test_prune_sweeps_contents_a_crash_left_without_a_file(tmp_path: Path,
                                                                o: str) -> None:
    s = EmbeddedStore(str(tmp_path / "store"))
    try:
        await s.batches.put_file(a_file(o, "file-1", b"x", at=50.0), b"x")
        files = tmp_path / "store" / "files"
        os.utime(files / "file-1", (1.0, 1.0))  # old on disk, but a file's
        for name in ("file-orphan", ".tmp-0123"):
            (files / name).write_bytes(b"left over")
            os.utime(files / name, (1.0, 1.0))
        (files / "file-recent-orphan").write_bytes(b"maybe being written")
        assert await s.batches.prune(10.0) == 0
        assert on_disk(files) == ["file-1", "file-recent-orphan"]
        assert await s.batches.file_content(o, "file-1") == b"x"
    finally:
        await s.close()


async def test_the_embedded_store_keeps_files_and_batches_across_a_restart(
        tmp_path: Path, o: str) -> None:
    s = EmbeddedStore(str(tmp_path / "store"))
    await s.batches.put_file(a_file(o, "file-1", b"abc"), b"abc")
    batch = await new_batch(s.batches, o, "batch_1", 3)
    await s.close()
    s = EmbeddedStore(str(tmp_path / "store"))
    try:
        assert await s.batches.file_content(o, "file-1") == b"abc"
        assert await s.batches.get_batch(o, "batch_1") == batch
        assert len(await s.batches.lines("batch_1", -1, 10)) == 3
    finally:
        await s.close()
