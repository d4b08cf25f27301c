"""httpx transports that hand each request to an in-process gateway instead of a socket:
the official SDKs take an `http_client`, so every SDK feature (streaming, responses,
embeddings, parse, tools) goes through the gateway's own ASGI app, unchanged.

`LoopTransport` serves sync clients (any thread), `AsyncLoopTransport` async ones on
the caller's own loop. Either submits the exchange to the gateway's loop and reads the
answer as it comes: a sync reader from a thread-safe queue, an async one from an
asyncio queue of its own loop that the gateway's loop fills with
`call_soon_threadsafe` (no object of one loop is ever awaited on the other).
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, wait
from typing import Any, Protocol

import httpx2 as httpx

from tollway.library.attribution import headers_for
from tollway.library.exchange import END, Exchange, Start, scope_of


class Host(Protocol):
    """What a transport needs of the gateway: to run an exchange on its loop."""

    def launch(self, exchange: Exchange) -> Future[None]: ...
    def on_loop(self) -> bool: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...


def _exchange(host: Host, request: httpx.Request, body: bytes,
              put: Any) -> Exchange:
    url = request.url
    raw = [(k.lower(), v) for k, v in request.headers.raw]
    raw += headers_for({k for k, _ in raw})
    scope = scope_of(request.method, url.scheme, url.host, url.port or 80,
                     url.raw_path.partition(b"?")[0], url.query, raw)
    return Exchange(scope, body, put, host.loop)


def _read_timeout(request: httpx.Request) -> float | None:
    t = request.extensions.get("timeout") or {}
    read = t.get("read")
    return float(read) if read is not None else None


def _failure(item: BaseException) -> Exception:
    if isinstance(item, Exception):
        return item
    return httpx.ReadError("the in-process gateway closed while answering")


class LoopTransport(httpx.BaseTransport):
    def __init__(self, host: Host) -> None:
        self.host = host

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        items: queue.SimpleQueue[object] = queue.SimpleQueue()
        ex = _exchange(self.host, request, body, items.put)
        done = self.host.launch(ex)
        timeout = _read_timeout(request)
        try:
            first = _take(items, ex, done, timeout, request)
        except BaseException:  # interrupted while waiting (KeyboardInterrupt): it left
            ex.disconnect()
            raise
        if isinstance(first, BaseException):
            raise _failure(first)
        assert isinstance(first, Start)
        return httpx.Response(first.status, headers=first.headers,
                              stream=_SyncBody(self.host, ex, items, done, timeout, request),
                              request=request)


def _take(items: queue.SimpleQueue[object], ex: Exchange, done: Future[None],
          timeout: float | None, request: httpx.Request) -> object:
    try:
        return items.get(timeout=timeout)
    except queue.Empty:
        ex.disconnect()  # and, as a stream closed early, once it is accounted for:
        wait([done])
        raise httpx.ReadTimeout("the gateway did not answer in time", request=request) from None


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, host: Host, ex: Exchange, items: queue.SimpleQueue[object],
                 done: Future[None], timeout: float | None, request: httpx.Request) -> None:
        self.host, self.ex, self.items, self.done = host, ex, items, done
        self.timeout, self.request = timeout, request
        self.ended = False

    def __iter__(self) -> Iterator[bytes]:
        while not self.ended:
            item = _take(self.items, self.ex, self.done, self.timeout, self.request)
            if item is END:
                self.ended = True
            elif isinstance(item, bytes):
                self.ex.took()
                yield item
            elif isinstance(item, BaseException):
                self.ended = True
                raise _failure(item)

    def close(self) -> None:
        """Left before the end: the gateway sees the client go away, and this returns
        once the request is accounted for (upstream call cancelled, ledger row)."""
        if self.ended:
            return
        self.ended = True
        self.ex.disconnect()
        if not self.host.on_loop():  # (a collector run on the loop's thread must not wait)
            wait([self.done])


class AsyncLoopTransport(httpx.AsyncBaseTransport):
    def __init__(self, host: Host) -> None:
        self.host = host

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        items: asyncio.Queue[object] = asyncio.Queue()
        mine = asyncio.get_running_loop()

        def put(item: object) -> None:  # on the gateway's loop: hand over to the caller's
            mine.call_soon_threadsafe(items.put_nowait, item)

        ex = _exchange(self.host, request, body, put)
        done = self.host.launch(ex)
        timeout = _read_timeout(request)
        try:
            first = await _atake(items, ex, done, timeout, request)
        except BaseException:  # cancelled while waiting: the client left
            ex.disconnect()
            raise
        if isinstance(first, BaseException):
            raise _failure(first)
        assert isinstance(first, Start)
        return httpx.Response(first.status, headers=first.headers,
                              stream=_AsyncBody(ex, items, done, timeout, request),
                              request=request)


async def _atake(items: asyncio.Queue[object], ex: Exchange, done: Future[None],
                 read_s: float | None, request: httpx.Request) -> object:
    try:
        return await asyncio.wait_for(items.get(), read_s)
    except TimeoutError:
        ex.disconnect()
        await asyncio.wait([asyncio.wrap_future(done)])
        raise httpx.ReadTimeout("the gateway did not answer in time", request=request) from None


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, ex: Exchange, items: asyncio.Queue[object], done: Future[None],
                 timeout: float | None, request: httpx.Request) -> None:
        self.ex, self.items, self.done = ex, items, done
        self.timeout, self.request = timeout, request
        self.ended = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self.ended:
            item = await _atake(self.items, self.ex, self.done, self.timeout, self.request)
            if item is END:
                self.ended = True
            elif isinstance(item, bytes):
                self.ex.took()
                yield item
            elif isinstance(item, BaseException):
                self.ended = True
                raise _failure(item)

    async def aclose(self) -> None:
        """As `_SyncBody.close`, awaited on the caller's loop."""
        if self.ended:
            return
        self.ended = True
        self.ex.disconnect()
        await asyncio.wait([asyncio.wrap_future(self.done)])
