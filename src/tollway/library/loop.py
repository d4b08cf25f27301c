"""An event loop on a thread of its own: where an in-process gateway lives, whatever the
caller's code is — sync, asyncio on its own loop, or several threads at once.

One loop, one thread: the gateway's objects (its store connections, its aiohttp
session, its tasks) belong to one loop and are only ever touched from it; callers
hand it coroutines (`submit`) and get concurrent futures back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


class OwnedLoop:
    """A running event loop on a daemon thread, until `close`."""

    def __init__(self, name: str = "tollway-library") -> None:
        self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name=name,
                                       daemon=True)
        self.thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """`coro`'s result, waited for from another thread."""
        return self.submit(coro).result()

    def on_it(self) -> bool:
        """Is the caller the loop's own thread (where waiting on it would deadlock)?"""
        return threading.current_thread() is self.thread

    def close(self) -> None:
        """Cancel what is left, shut async generators and the default executor down
        (asyncio.to_thread's threads), stop the loop, join its thread, close it: no
        thread, task or file descriptor of its own outlives this."""
        if self.loop.is_closed():
            return
        self.run(self._wind_down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    @staticmethod
    async def _wind_down() -> None:
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.shutdown_asyncgens()
        await loop.shutdown_default_executor()
