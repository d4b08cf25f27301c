"""One HTTP exchange with the ASGI app, in memory: the request as an ASGI scope and
body, the response handed over piece by piece to a reader on another thread or loop.

It runs on the gateway's loop; its reader (a sync SDK's thread, or an async SDK on the
caller's own loop) is given each piece through `put` — a thread-safe callable — as
`Start`, then `bytes` chunks, then `END` (or an exception). `END` comes once the app
has returned, not with the last body chunk: by then the request's `finish` has run
(the budget settled, the ledger row buffered), so code that reads an answer and sends
the next request sees the first accounted for.

A reader that leaves early (a stream closed, a timeout, its task cancelled) calls
`disconnect`: the app's `receive()` then says `http.disconnect`, and its disconnect
watch cancels the upstream call, exactly as a client hanging up on the server does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from tollway.server.asgi import Headers, Message, Receive, Scope, Send

App = Callable[[Scope, Receive, Send], Any]
# Chunks the app may send ahead of its reader before its `send` waits (a stream's
# events; a JSON answer is one chunk): the flow control a socket's buffer gives a server.
WINDOW = 64


@dataclass(frozen=True, slots=True)
class Start:
    status: int
    headers: Headers


END = object()  # the app returned: nothing more will come


def scope_of(method: str, scheme: str, host: str, port: int, raw_path: bytes,
             query: bytes, headers: Headers) -> Scope:
    """The ASGI scope of a request. No client address: an in-process caller has none,
    so the per-IP rate limits (meant for anonymous network callers) do not apply."""
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": method, "scheme": scheme,
            "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
            "query_string": query, "root_path": "", "headers": headers,
            "client": None, "server": (host, port), "state": {}}


class Exchange:
    """One request through the app; `run` on the gateway's loop, the rest from the
    reader's side."""

    __slots__ = ("_asked", "_credits", "_gone", "_loop", "_put", "body", "scope", "task")

    def __init__(self, scope: Scope, body: bytes, put: Callable[[object], None],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.scope = scope
        self.body = body
        self._put = put
        self._loop = loop  # the gateway's
        self._asked = False
        # (Bound to a loop on first use, so made here and used only on the gateway's.)
        self._gone = asyncio.Event()
        self._credits = asyncio.Semaphore(WINDOW)
        self.task: asyncio.Task[Any] | None = None

    async def run(self, app: App) -> None:
        self.task = asyncio.current_task()
        try:
            await app(self.scope, self._receive, self._send)
        except BaseException as e:  # a bug in the app, or the gateway closing: say so
            self._put(e)
            if not isinstance(e, Exception):
                raise
        else:
            self._put(END)

    async def _receive(self) -> Message:
        if not self._asked:  # the whole body at once: the SDKs send it whole
            self._asked = True
            body, self.body = self.body, b""
            return {"type": "http.request", "body": body, "more_body": False}
        await self._gone.wait()  # after the body, receive() only says the client left
        return {"type": "http.disconnect"}

    async def _send(self, msg: Message) -> None:
        if self._gone.is_set():
            return  # nobody reads it any more
        kind = msg["type"]
        if kind == "http.response.start":
            self._put(Start(msg["status"], list(msg.get("headers", ()))))
        elif kind == "http.response.body":
            chunk = msg.get("body", b"")
            if chunk:
                await self._credits.acquire()
                self._put(bytes(chunk))

    # --- the reader's side (any thread) ------------------------------------------------

    def took(self) -> None:
        """The reader took a chunk: the app may send one more."""
        self._tell(self._took)

    def _took(self) -> None:
        self._credits.release()

    def disconnect(self) -> None:
        """The reader left: the app sees the client go away."""
        self._tell(self._disconnect)

    def _tell(self, fn: Callable[[], None]) -> None:
        # A reader may still be taking what was sent after the gateway closed: then
        # there is nobody left to tell.
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(fn)

    def _disconnect(self) -> None:
        if not self._gone.is_set():
            self._gone.set()
            self._credits.release()  # a `send` waiting for room ends (and drops its chunk)
