"""Batches, whichever provider's: their lines, their life, and the runner that answers
them. The wire formats are `batch_wire.py`'s; the routes `openai_batches.py` and
`anthropic_batches.py`.

A batch takes its settings (`BatchSettings`) when it is created. Its lines are answered
in input order, evenly over `delay_s` (line i of n at (i+1)/n of it), each by the
simulator's own request handling (`Host.answer_line`: the interactive answer and usage,
at once). A seeded draw per line, in order, fails `error_rate` of them with a 500.
A line not answered `expiry_s` after creation expires with the batch; a cancel stops
the runner at once, leaving the unanswered lines unanswered. State is in memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tollway.simulate.state import ModelUsage, SimConfig, Stats

# OpenAI's statuses; Anthropic's processing_status is a coarser view of them.
Status = Literal["validating", "failed", "in_progress", "finalizing", "completed",
                 "expired", "cancelling", "cancelled"]
ENDED: frozenset[Status] = frozenset({"failed", "completed", "expired", "cancelled"})
Outcome = Literal["succeeded", "errored", "expired", "canceled"]

# While the runner is behind its schedule it answers lines without sleeping; it still
# yields to the loop this often, so a large batch does not stall the other requests.
_YIELD_EVERY = 64


@dataclass(slots=True, frozen=True)
class LineResult:
    """A line's answer: what the interactive endpoint would have answered."""

    status: int
    request_id: str
    body: bytes  # the JSON body
    model: str = ""
    usage: ModelUsage | None = None  # what it cost, when it was answered (status 200)


@dataclass(slots=True, frozen=True)
class LineError:
    """Why an input file is refused (the batch then fails), OpenAI's BatchError."""

    code: str
    message: str
    line: int | None = None  # 1-based
    param: str | None = None


@dataclass(slots=True)
class BatchLine:
    custom_id: str
    body: Any
    result: LineResult | None = None


@dataclass(slots=True, frozen=True)
class BatchSettings:
    delay_s: float
    error_rate: float
    expiry_s: float
    seed: int

    @classmethod
    def of(cls, cfg: SimConfig) -> BatchSettings:
        return cls(cfg.batch_delay_s, cfg.batch_error_rate, cfg.batch_expiry_s, cfg.seed)


@dataclass(slots=True)
class Batch:
    id: str
    endpoint: str
    lines: list[BatchLine]
    settings: BatchSettings
    errors: list[LineError] = field(default_factory=list)
    status: Status = "validating"
    created_at: float = field(default_factory=time.time)
    # When it entered each status (wall clock), by status.
    at: dict[Status, float] = field(default_factory=dict)
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def expires_at(self) -> float:
        return self.created_at + self.settings.expiry_s

    @property
    def ended_at(self) -> float | None:
        return self.at.get(self.status) if self.status in ENDED else None

    def enter(self, status: Status) -> None:
        self.status = status
        self.at[status] = time.time()

    def cancel(self) -> bool:
        """Ask the runner to stop; False when the batch is past being cancelled."""
        if self.status not in ("validating", "in_progress", "cancelling"):
            return False
        if self.status != "cancelling":
            self.enter("cancelling")
        self.cancel_requested.set()
        return True

    def outcome(self, line: BatchLine) -> Outcome | None:
        """How the line ended; None while it may still be answered."""
        if line.result is not None:
            return "succeeded" if line.result.status == 200 else "errored"
        if self.status == "expired":
            return "expired"
        if self.status == "cancelled":
            return "canceled"
        return None

    def outcomes(self) -> Counter[Outcome | None]:
        return Counter(self.outcome(line) for line in self.lines)


@dataclass(slots=True, frozen=True)
class StoredFile:
    """An OpenAI file: uploaded, or a batch's output or errors."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int


@dataclass(slots=True)
class FileBatch:
    """An OpenAI batch: read from an uploaded file, answered into files."""

    batch: Batch
    input_file_id: str
    metadata: dict[str, str] | None
    output_file_id: str | None = None
    error_file_id: str | None = None


Answer = Callable[[BatchLine, bool], LineResult]


class Host(Protocol):
    """What the batch routes need of the simulator (`server.Simulator`)."""

    config: SimConfig
    stats: Stats

    def answer_line(self, endpoint: str, body: Any, fail: bool) -> LineResult: ...


async def run(batch: Batch, answer: Answer, ended: Callable[[Batch], None]) -> None:
    """Take the batch from validating to its end; `answer(line, fail)` answers a line,
    `ended(batch)` runs once it has ended (before anyone can see it so)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    s = batch.settings
    rng = random.Random(f"{s.seed}:{batch.id}")
    if batch.errors:
        _finish(batch, "failed", ended)
        return
    if batch.status == "validating":  # (not if a cancel came first)
        batch.enter("in_progress")
    deadline = start + s.expiry_s
    n = len(batch.lines)
    for i, line in enumerate(batch.lines):
        due = start + s.delay_s * (i + 1) / n
        if await _cancelled(batch, min(due, deadline), i):
            _finish(batch, "cancelled", ended)
            return
        if due > deadline:
            _finish(batch, "expired", ended)
            return
        line.result = answer(line, rng.random() < s.error_rate)
    batch.enter("finalizing")
    await asyncio.sleep(0)
    _finish(batch, "completed", ended)


async def _cancelled(batch: Batch, until: float, i: int) -> bool:
    """Wait until `until` (the loop's clock) or a cancel, whichever comes first."""
    wait = until - asyncio.get_running_loop().time()
    if wait > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(batch.cancel_requested.wait(), wait)
    elif i % _YIELD_EVERY == 0:
        await asyncio.sleep(0)
    return batch.cancel_requested.is_set()


def _finish(batch: Batch, status: Status, ended: Callable[[Batch], None]) -> None:
    batch.enter(status)
    ended(batch)


def count_ended(stats: Stats, batch: Batch) -> None:
    """Add an ended batch's lines, by outcome, to the stats."""
    c, o = stats.batches, batch.outcomes()
    c.succeeded += o["succeeded"]
    c.errored += o["errored"]
    c.expired += o["expired"]
    c.canceled += o["canceled"]


def answerer(host: Host, endpoint: str) -> Answer:
    """Answer lines with the host, their usage counted as batch usage."""

    def answer(line: BatchLine, fail: bool) -> LineResult:
        result = host.answer_line(endpoint, line.body, fail)
        if result.usage is not None:
            host.stats.batch_model(result.model).add(result.usage)
        return result

    return answer


class Runners:
    """The running batches' tasks, so that a reset or shutdown can stop them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, batch: Batch, answer: Answer, ended: Callable[[Batch], None]) -> None:
        task = asyncio.get_running_loop().create_task(run(batch, answer, ended))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()


def new_id(prefix: str, *parts: object) -> str:
    """An id reproducible from its parts (the seed and a counter, say), and unlike any
    with another prefix."""
    key = "\0".join(map(str, (prefix, *parts))).encode()
    return prefix + hashlib.blake2b(key, digest_size=12).hexdigest()


def page(ids: list[str], *, after: str | None = None, before: str | None = None,
         limit: int) -> tuple[list[str], bool]:
    """A page of `ids` (newest first) and whether more lie beyond it: the `limit` after
    `after` (older), or the `limit` just before `before` (newer). An unknown cursor
    gives an empty page."""
    if before is not None:
        end = ids.index(before) if before in ids else 0
        start = max(0, end - limit)
        return ids[start:end], start > 0
    start = 0
    if after is not None:
        start = ids.index(after) + 1 if after in ids else len(ids)
    return ids[start:start + limit], start + limit < len(ids)
