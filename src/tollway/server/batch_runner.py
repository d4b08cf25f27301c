"""Running batches: every process claims lines of the batches in progress from the store
(a fleet's replicas share one batch; a line claimed by a process that died is taken
over when its lease runs out), answers each through the request path
(`batch_line.py`), records its result, and the process that finishes a batch's last
line writes its output and error files in input order.

Lines run `concurrency` at a time per process — the batch's pacing, on top of the
deployments' own outbound pacing, so interactive traffic keeps its share. A batch not
finished by its `expires_at` ends `expired`: its unrun lines go to the error file as
`batch_expired`, and their budget holds are released.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from typing import Any, Literal

import msgspec
import orjson

from tollway import tasks
from tollway.accounting.prices import PICO_PER_USD
from tollway.errors import TollwayError
from tollway.gateway import Gateway, quote
from tollway.gateway.call import Call
from tollway.policy.admission import LineHold
from tollway.policy.auth import Caller
from tollway.server.batch_line import Owner, answer, line_row_id
from tollway.server.chat import ANTHROPIC, OPENAI
from tollway.server.embeddings import EMBEDDINGS
from tollway.server.responses import RESPONSES
from tollway.store.base import BatchLine, BatchRecord, BatchStatus, LineState, StoredFile
from tollway.wire import batch as batch_wire

log = logging.getLogger("tollway.batch")

LEASE_SECONDS = 120.0  # a line not finished in this long is taken over by another process
IDLE_POLL = 0.5  # seconds between looks for work when none is known (another replica's)
PAGE = 1000
UPSTREAM_CLAIM = 10_000  # lines of a provider-batched batch claimed in one go
ACTIVE_PAGE = 1000
UPSTREAM_CLAIM = 10_000  # lines of a provider-batched batch claimed in one go
STOPPED = {"cancelled": "was cancelled", "expired": "expired"}


class BatchMeta(msgspec.Struct, omit_defaults=True):
    """What the gateway keeps of a batch beyond the store's columns (its `meta`)."""

    owner: Owner
    metadata: dict[str, str] | None = None
    completion_window: str = "24h"
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    upstream: bool = False  # its lines go to the provider's batch API (at its price)
    ending: Literal["cancelled", "expired"] | None = None  # what stopped it, if not done
    times: dict[str, float] = msgspec.field(default_factory=dict)  # status -> when it began


def meta_of(batch: BatchRecord) -> BatchMeta:
    return msgspec.json.decode(batch.meta, type=BatchMeta)


DIALECTS: dict[str, Any] = {"/v1/chat/completions": OPENAI, "/v1/embeddings": EMBEDDINGS,
                            "/v1/responses": RESPONSES,
                            "/v1/messages": ANTHROPIC}  # how each endpoint's lines are read
# Batches whose results are read from their lines, not files (Anthropic's message
# batches: message_batches.py), so they write none.
NO_FILES = frozenset({"/v1/messages"})


class BatchRunner:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.store = gateway.store.batches
        self.concurrency = gateway.config.server.batch_concurrency
        self.worker = f"{os.uname().nodename}-{os.getpid()}-{os.urandom(3).hex()}"
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._batches: dict[str, BatchRecord] = {}  # the active ones, as last looked at
        self._finalizing: set[str] = set()
        self._waiting: set[asyncio.Task[None]] = set()  # lines on a provider's batch
        self._down = False  # the store failed the last look (said once)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="tollway-batches")

    async def close(self) -> None:
        """Stop claiming; the lines in flight are let finish (a drain), so none is left
        half-sent; what is not claimed yet is resumed by the next process."""
        await tasks.stop(self._task)
        if self._running:
            await asyncio.wait(self._running)
        for t in self._waiting:  # on a provider's batch: left to end with their batch
            t.cancel()

    async def _loop(self) -> None:
        while True:
            lines: list[BatchLine] = []
            try:
                active = await self.store.active(ACTIVE_PAGE)
                await self._tend(active)
                for b in active:
                    if b.status == "in_progress":
                        got = await self._claim(b)
                        lines += got
                        self._start(got, self._waiting if meta_of(b).upstream
                                    else self._running)
                if self._down:
                    log.info("the batch store answers again: batches go on")
                    self._down = False
            except Exception as e:  # the store is down: said once, tried again
                if not self._down:
                    self.gateway.outages.failed("batches", "batches wait, tried again "
                                                f"every {IDLE_POLL:g}s", e)
                    self._down = True
            if not lines:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), IDLE_POLL)

    async def _claim(self, b: BatchRecord) -> list[BatchLine]:
        """Lines of `b` to run now. A batch sent to a provider's batch API takes all of
        them at once, under a lease to its end (they wait on the provider, not on this
        process: a dead process's lines are not sent twice but end with the batch); a
        batch Tollway sends itself, what is left of `concurrency`."""
        now = time.time()
        if meta_of(b).upstream:
            return await self.store.claim(self.worker, UPSTREAM_CLAIM,
                                          max(b.expires_at - now, LEASE_SECONDS), now, only=b.id)
        free = self.concurrency - len(self._running)
        return (await self.store.claim(self.worker, free, LEASE_SECONDS, now, only=b.id)
                if free > 0 else [])

    def _start(self, lines: list[BatchLine], into: set[asyncio.Task[None]]) -> None:
        for line in lines:
            t = asyncio.create_task(self._run(line))
            into.add(t)
            t.add_done_callback(self._done)

    def _done(self, t: asyncio.Task[None]) -> None:
        self._running.discard(t)
        self._waiting.discard(t)
        self.wake.set()  # a slot is free

    async def _tend(self, active: list[BatchRecord]) -> None:
        """What no line's finish will do: end a batch past its window, settle the lines
        a dead process left running in a cancelled one, write the files of a batch whose
        last line finished in a process that died before writing them."""
        now = time.time()
        for b in active:
            self._batches[b.id] = b
            if b.status == "in_progress" and b.expires_at <= now:
                await self._stop(b, "expired")
            elif ((b.status == "cancelling" and await self.store.cancel_stale(b.id, now))
                  or (b.status == "finalizing" and b.id not in self._finalizing)):
                await self.finalize(b)

    async def _batch(self, batch_id: str) -> BatchRecord | None:
        b = self._batches.get(batch_id)
        if b is None:  # claimed from a batch made since the last look
            for a in await self.store.active(ACTIVE_PAGE):
                self._batches[a.id] = a
            b = self._batches.get(batch_id)
        return b

    async def _run(self, line: BatchLine) -> None:
        try:
            batch = await self._batch(line.batch_id)
            if batch is None:
                return
            try:
                caller = await meta_of(batch).owner.caller(self.gateway)
            except LookupError as e:
                await self._finish(batch, line, "failed", batch_wire.failed_line(
                    line_row_id(batch.id, line.index), line.custom_id, "key_refused", str(e)), 0)
                return
            got = await answer(self.gateway, DIALECTS[batch.endpoint], caller,
                               batch.id, line.index, line.body)
            result = batch_wire.result_line(line_row_id(batch.id, line.index), line.custom_id,
                                            got.status, f"{batch.id}-{line.index}", got.body)
            await self._finish(batch, line, "done" if got.status < 400 else "failed", result,
                               round(got.cost_usd * PICO_PER_USD))
        except Exception:
            log.exception("batch %s line %d failed; when its lease runs out it is taken "
                          "over", line.batch_id, line.index)

    async def _finish(self, batch: BatchRecord, line: BatchLine, state: LineState,
                      result: bytes, cost_pico: int) -> None:
        if await self.store.finish(batch.id, line.index, self.worker, state, result,
                                   cost_pico) == "last":
            await self.finalize(batch)

    async def finalize(self, batch: BatchRecord) -> None:
        """Write the output and error files (input order) and mark the batch ended:
        completed; or cancelled or expired, when that is what stopped it."""
        fresh = await self.store.get_batch(batch.owner, batch.id)
        if fresh is None or fresh.status not in ("finalizing", "cancelling"):
            return
        self._finalizing.add(batch.id)
        try:
            await self._write(fresh)
        finally:
            self._finalizing.discard(batch.id)
            self._batches.pop(batch.id, None)

    async def _write(self, batch: BatchRecord) -> None:
        meta = meta_of(batch)
        ending = meta.ending or "cancelled"
        ok: list[bytes] = []
        bad: list[bytes] = []
        after = -1
        while page := await self.store.lines(batch.id, after, PAGE):
            for ln in page:
                if ln.result is None:  # never ran: the batch was stopped first
                    bad.append(batch_wire.failed_line(
                        line_row_id(batch.id, ln.index), ln.custom_id, f"batch_{ending}",
                        f"This request was not run: the batch {STOPPED[ending]} first."))
                else:
                    (ok if ln.state == "done" else bad).append(ln.result)
            after = page[-1].index
        now = time.time()
        files = batch.endpoint not in NO_FILES
        if ok and files:
            meta.output_file_id = await self._file(batch, ok, "output", now)
        if bad and files:
            meta.error_file_id = await self._file(batch, bad, "errors", now)
        end: BatchStatus = "completed" if batch.status == "finalizing" else ending
        meta.times[end] = now
        await self.store.set_status(batch.owner, batch.id, end, expect={batch.status},
                                    meta=msgspec.json.encode(meta))

    async def _file(self, batch: BatchRecord, lines: list[bytes], kind: str,
                    now: float) -> str:
        content = b"\n".join(lines) + b"\n"
        fid = "file-" + os.urandom(12).hex()
        await self.store.put_file(StoredFile(batch.owner, fid, "batch_output",
                                             f"{batch.id}_{kind}.jsonl", len(content), now),
                                  content)
        return fid

    # --- what the endpoints ask -----------------------------------------------------------

    async def create(self, batch: BatchRecord, lines: list[BatchLine], caller: Caller) -> None:
        """Hold every line's worst case on the budgets that apply (all or none: a batch
        that cannot fit is refused here, naming the budget and what it would need), then
        store the batch and its lines; the runners pick it up. A line the request path
        would refuse (an unknown model, a limit) holds nothing and fails alone when run,
        with its error in the error file."""
        dialect = DIALECTS[batch.endpoint]
        holds: list[LineHold] = []
        upstream = True  # every line's route has a provider batch API
        for ln in lines:
            call = Call(f"{batch.id}-{ln.index}", caller=caller, batch=batch.id)
            try:
                if dialect.bind is None:
                    req = dialect.parse(ln.body, self.gateway.config.server)
                else:
                    req, _ = await dialect.bind(self.gateway, call, ln.body)
                usd, tokens, applied = await quote.worst_case(self.gateway.pipeline.s, call, req)
            except TollwayError:
                continue
            route = self.gateway.routes.find(req.model)
            upstream = upstream and route is not None and self.gateway.upstream.deployment(
                route.deployments) is not None
            if applied:
                holds.append(LineHold(line_row_id(batch.id, ln.index), applied, usd, tokens))
        if upstream and batch.endpoint != "/v1/responses":
            meta = meta_of(batch)
            meta.upstream = True
            batch = dataclasses.replace(batch, meta=msgspec.json.encode(meta))
        admission = self.gateway.admission
        await admission.hold_many(holds, batch.expires_at, time.time())
        try:
            await self.store.create_batch(batch, lines)
        except BaseException:
            await admission.release_many([h.hold_id for h in holds])
            raise
        self.wake.set()

    async def cancel(self, batch: BatchRecord) -> BatchRecord:
        """Stop a batch: no line not yet running will run and their holds are released;
        once the running ones are done it ends `cancelled` with what was answered."""
        return await self._stop(batch, "cancelled")

    async def _stop(self, batch: BatchRecord, ending: Literal["cancelled", "expired"]
                    ) -> BatchRecord:
        meta = meta_of(batch)
        meta.ending = ending
        meta.times["cancelling" if ending == "cancelled" else "expiring"] = time.time()
        got = await self.store.cancel(batch.owner, batch.id, meta=msgspec.json.encode(meta))
        if got is None or got.batch.status != "cancelling":
            return got.batch if got is not None else batch
        await self.release_unrun(batch.id)
        if got.last:
            await self.finalize(got.batch)
        return await self.store.get_batch(batch.owner, batch.id) or got.batch

    async def release_unrun(self, batch_id: str) -> None:
        """Give back the budget holds of the lines that will not run."""
        after, ids = -1, []
        while page := await self.store.lines(batch_id, after, PAGE):
            ids += [line_row_id(batch_id, ln.index) for ln in page
                    if ln.result is None and ln.state == "cancelled"]
            after = page[-1].index
        await self.gateway.admission.release_many(ids)


def batch_json(batch: BatchRecord) -> bytes:
    """The batch as OpenAI's API shows it, with what it cost so far (`tollway`)."""
    meta = meta_of(batch)
    t = meta.times
    status = ("in_progress" if batch.status == "cancelling" and meta.ending == "expired"
              else batch.status)
    return orjson.dumps({
        "id": batch.id, "object": "batch", "endpoint": batch.endpoint,
        "errors": ({"object": "list", "data": meta.errors} if meta.errors else None),
        "input_file_id": batch.input_file_id, "completion_window": meta.completion_window,
        "status": status, "output_file_id": meta.output_file_id,
        "error_file_id": meta.error_file_id, "created_at": int(batch.created_at),
        "in_progress_at": _int(t.get("in_progress")), "expires_at": int(batch.expires_at),
        "finalizing_at": _int(t.get("finalizing")), "completed_at": _int(t.get("completed")),
        "failed_at": _int(t.get("failed")), "expired_at": _int(t.get("expired")),
        "cancelling_at": _int(t.get("cancelling")), "cancelled_at": _int(t.get("cancelled")),
        "request_counts": {"total": batch.total, "completed": batch.completed,
                           "failed": batch.failed},
        "metadata": meta.metadata,
        "tollway": {"cost_usd": batch.cost_pico / PICO_PER_USD},
    })


def _int(t: float | None) -> int | None:
    return int(t) if t is not None else None
