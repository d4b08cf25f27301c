"""A near-free upstream: answers every request with one fixed chat.completion.

The simulator is a Python server too and on a small machine it tops out near the rate
we want to push through the gateway, so it would hide the gateway's own ceiling. This
one is a raw asyncio protocol (uvloop, keep-alive, Content-Length bodies only) that
costs a few microseconds a request, so the proxy in front of it is the bottleneck.

    canned_upstream.py --port 18004 --body reply.json
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import uvloop


class Canned(asyncio.Protocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            need = end + 4 + content_length(self.buf[:end])
            if len(self.buf) < need:
                return  # body not all here yet
            self.buf = self.buf[need:]
            assert self.transport is not None
            self.transport.write(self.reply)


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def http_reply(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def serve(port: int, body: bytes) -> None:
    loop = asyncio.get_running_loop()
    reply = http_reply(body)
    server = await loop.create_server(lambda: Canned(reply), "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"canned upstream on http://127.0.0.1:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--body", required=True, help="file with the JSON reply to send")
    args = ap.parse_args()
    with open(args.body, "rb") as f:
        body = f.read()
    uvloop.run(serve(args.port, body))


if __name__ == "__main__":
    main()
