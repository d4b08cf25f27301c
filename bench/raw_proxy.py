"""The raw floor: a pass-through proxy with no web framework at all.

uvloop protocols + httptools parsers on both sides, a keep-alive upstream pool and one
asyncio task per request (as any gateway with async routing code needs). JSON replies
only (Content-Length bodies, no streaming), no timeouts, no header forwarding: not a
usable proxy, just a measure of what Python itself costs per proxied request here, next
to what aiohttp (the floor) and uvicorn + aiohttp (the gateway) cost.

    raw_proxy.py --port 18107 --upstream-port 18101
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import httptools
import uvloop


class UpstreamConn(asyncio.Protocol):
    """One keep-alive connection to the upstream; one request at a time."""

    def __init__(self, pool: list[UpstreamConn]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.reply: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        reply, self.reply = self.reply, None
        self.pool.append(self)  # idle again
        if reply is not None and not reply.done():
            reply.set_result((self.parser.get_status_code(), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(ConnectionError("upstream closed the connection"))


class Upstream:
    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[UpstreamConn] = []

    async def post(self, path: bytes, body: bytes) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        if self.idle:
            conn = self.idle.pop()
        else:
            _, conn = await loop.create_connection(lambda: UpstreamConn(self.idle),
                                                   "127.0.0.1", self.port)
        conn.reply = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(b"POST " + path + b" HTTP/1.1\r\nHost: upstream\r\n"
                             b"Content-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
        return await conn.reply


class ClientConn(asyncio.Protocol):
    """One client connection; requests are answered in order (no pipelining)."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        asyncio.get_running_loop().create_task(self.answer(self.url, body))

    async def answer(self, url: bytes, body: bytes) -> None:
        try:
            status, out = await self.upstream.post(url, body)
        except OSError:
            status, out = 502, b'{"error":"upstream failed"}'
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%b" % (status, len(out), out))


async def serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    upstream = Upstream(upstream_port)
    server = await loop.create_server(lambda: ClientConn(upstream), "127.0.0.1", port,
                                      backlog=4096)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"raw proxy on http://127.0.0.1:{port} -> 127.0.0.1:{upstream_port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream-port", type=int, required=True)
    args = ap.parse_args()
    uvloop.run(serve(args.port, args.upstream_port))


if __name__ == "__main__":
    main()
