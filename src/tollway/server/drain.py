"""Graceful shutdown: let what is running finish, for a while.

On SIGTERM or SIGINT uvicorn stops accepting connections and waits for the running
requests; before that, `Drain` is told (it wraps uvicorn's signal handlers once the
server runs: the app's lifespan start-up). From then on a new chat request is refused
with 503 (the SDKs retry it, elsewhere), and once `server.drain_seconds` have passed
the chat requests still running are cancelled with `DRAIN`: each ends with an error
event its client's SDK raises (a 503 before the answer began) and writes its ledger
row — no connection simply cut, no traceback. uvicorn's own deadline is set later than
ours, so it never has to cut anything itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from tollway.errors import Unavailable

log = logging.getLogger("tollway")
DRAIN = "tollway: drain deadline"  # the cancel message, for whoever reads a traceback
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drain:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.draining = False
        self.running: set[asyncio.Task[Any]] = set()  # chat requests under way
        self.cut_off: set[asyncio.Task[Any]] = set()  # those the drain's deadline cancelled

    def watch_signals(self) -> None:
        """Be told first when a shutdown signal arrives, then pass it on. Called from the
        running server (uvicorn installs its handlers before the app starts)."""
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous):
                signal.signal(sig, _chained(self, loop, previous))

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.warning("shutting down: %d request(s) under way may finish within %g s",
                    len(self.running), self.seconds)
        asyncio.get_running_loop().call_later(self.seconds, self._expire)

    def _expire(self) -> None:
        if self.running:
            log.warning("drain over: ending %d request(s) with a shutdown error",
                        len(self.running))
        for task in list(self.running):
            self.cut_off.add(task)
            task.cancel(msg=DRAIN)

    def cancelled(self, task: asyncio.Task[Any] | None) -> bool:
        """Was `task` cancelled by the drain's deadline (not by its client leaving)?"""
        return task is not None and task in self.cut_off

    def refusal(self) -> Unavailable:
        return Unavailable("The gateway is shutting down; send the request again (another "
                           "replica, or this one once it is back, will take it).",
                           retry_after=1, code="shutting_down")

    def ended(self) -> Unavailable:
        return Unavailable("The gateway shut down before this request finished; send it "
                           "again.", retry_after=1, code="shutting_down")


def _chained(drain: Drain, loop: asyncio.AbstractEventLoop,
             previous: Callable[[int, FrameType | None], Any]
             ) -> Callable[[int, FrameType | None], None]:
    def handler(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(drain.begin)
        previous(sig, frame)

    return handler
