"""Slow and greedy clients, at the connection: uvicorn's httptools protocol with a
deadline for a request's headers and a cap on open connections per client address.

uvicorn bounds an idle keep-alive connection (`timeout_keep_alive`), but not a fresh
connection that sends nothing, nor headers or a body that trickle in a byte at a time:
each would hold a connection (and a file descriptor) for ever. Here a request's headers
must be complete within `server.header_timeout_seconds` of its first byte, or of the
connection opening, and its body within `server.body_timeout_seconds` of its headers
(408 and closed otherwise: the endpoint reading the body is told, so its ledger row
says 408 too), and a client address holding `server.max_connections_per_ip`
connections gets a 503 on the next and it is closed. A request only writes its
deadline down as httptools parses it (a float: a timer per request cost ~40k
instructions); one sweep a fraction of a second apart ends the connections past theirs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tollway.config import ServerConfig
from tollway.server.asgi import BODY_TIMED_OUT


class ConnectionLimits:
    """One process's open connections: by client address (the cap), and those waiting
    on a deadline (the sweep)."""

    def __init__(self, server: ServerConfig) -> None:
        self.header_seconds = server.header_timeout_seconds
        self.body_seconds = server.body_timeout_seconds
        self.per_ip = server.max_connections_per_ip
        self.open: dict[str, int] = {}
        self.watched: set[GuardedHttpProtocol] = set()
        # How often deadlines are looked at: a deadline is kept to within this.
        self.tick = min(1.0, self.header_seconds / 4, self.body_seconds / 4)
        self._sweeping = False

    def admit(self, ip: str) -> bool:
        n = self.open.get(ip, 0)
        if self.per_ip is not None and n >= self.per_ip:
            return False
        self.open[ip] = n + 1
        return True

    def release(self, ip: str) -> None:
        n = self.open.get(ip, 0) - 1
        if n > 0:
            self.open[ip] = n
        else:
            self.open.pop(ip, None)

    def watch(self, conn: GuardedHttpProtocol) -> None:
        self.watched.add(conn)
        if not self._sweeping:
            self._sweeping = True
            conn.loop.call_later(self.tick, self._sweep, conn.loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn in [c for c in self.watched if c.deadline is not None and c.deadline <= now]:
            conn.expire()
        if self.watched:
            loop.call_later(self.tick, self._sweep, loop)
        else:
            self._sweeping = False


def _reply(status: bytes, code: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error"
                                   if status.startswith(b"408") else "service_unavailable",
                                   "param": None, "code": code}})
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n" + extra
            + b"connection: close\r\ncontent-length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the header and body deadlines and the
    per-address cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits: ConnectionLimits = _limits_of(self.app)
        self._counted: str | None = None  # the address this connection counts against
        self.deadline: float | None = None  # loop time by which the next part must be in
        self._waiting_for_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ip = self.client[0] if self.client else ""
        if not self.limits.admit(ip):
            transport.write(_reply(
                b"503 Service Unavailable", "too_many_connections",
                f"This client address already holds {self.limits.per_ip} open connections "
                "(server.max_connections_per_ip); reuse them or close some.",
                b"retry-after: 1\r\n"))
            transport.close()
            return
        self._counted = ip
        # The first request's headers must come in time too.
        self.deadline = self.loop.time() + self.limits.header_seconds
        self.limits.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.watched.discard(self)
        if self._counted is not None:
            self.limits.release(self._counted)
            self._counted = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.deadline, self._waiting_for_body = (
            self.loop.time() + self.limits.header_seconds, False)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # The body next (parsed in this same call when it came with the headers).
        self.deadline, self._waiting_for_body = (
            self.loop.time() + self.limits.body_seconds, True)

    def on_message_complete(self) -> None:
        self.deadline = None
        super().on_message_complete()

    def expire(self) -> None:
        """Past its deadline: the headers or the body did not come in time."""
        self.deadline = None
        if self.transport.is_closing():
            return
        if self._waiting_for_body:
            self._body_too_slow()
            return
        self.transport.write(_reply(
            b"408 Request Timeout", "request_timeout",
            f"The request's headers did not arrive within "
            f"{self.limits.header_seconds:g} s (server.header_timeout_seconds)."))
        self.transport.close()

    def _body_too_slow(self) -> None:
        """Answer 408, tell the request reading the body (its receive() returns, and
        `read_body` raises the same 408 for the ledger), and hang up."""
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            return
        why = (f"The request body did not arrive within {self.limits.body_seconds:g} s "
               "(server.body_timeout_seconds).")
        self.scope[BODY_TIMED_OUT] = why  # type: ignore[literal-required]
        self.transport.write(_reply(b"408 Request Timeout", "request_timeout", why))
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()


def _limits_of(app: Any) -> ConnectionLimits:
    """The TollwayApp's limits, through any middleware uvicorn wrapped it in."""
    while not hasattr(app, "connection_limits") and hasattr(app, "app"):
        app = app.app
    limits: ConnectionLimits = app.connection_limits
    return limits
