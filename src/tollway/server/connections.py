"""Slow and greedy clients, at the connection: uvicorn's httptools protocol with a
deadline for a request's headers and a cap on open connections per client address.

uvicorn bounds an idle keep-alive connection (`timeout_keep_alive`), but not a fresh
connection that sends nothing, nor headers or a body that trickle in a byte at a time:
each would hold a connection (and a file descriptor) for ever. Here a request's headers
must be complete within `server.header_timeout_seconds` of its first byte, or of the
connection opening, and its body within `server.body_timeout_seconds` of its headers
(408 and closed otherwise: the endpoint reading the body is told, so its ledger row
says 408 too), and a client address holding `server.max_connections_per_ip`
connections gets a 503 on the next and it is closed. The deadlines are the loop's own
timers, armed and disarmed as httptools parses: nothing per request on the ASGI side.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tollway.config import ServerConfig
from tollway.server.asgi import BODY_TIMED_OUT


class ConnectionLimits:
    """One process's open connections by client address, and the limits."""

    def __init__(self, server: ServerConfig) -> None:
        self.header_seconds = server.header_timeout_seconds
        self.body_seconds = server.body_timeout_seconds
        self.per_ip = server.max_connections_per_ip
        self.open: dict[str, int] = {}

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


def _reply(status: bytes, code: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error"
                                   if status.startswith(b"408") else "service_unavailable",
                                   "param": None, "code": code}})
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n" + extra
            + b"connection: close\r\ncontent-length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the header deadline and the per-address cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits: ConnectionLimits = _limits_of(self.app)
        self._counted: str | None = None  # the address this connection counts against
        self._deadline: asyncio.TimerHandle | None = None

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
        self._arm()  # the first request's headers must come in time too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            self.limits.release(self._counted)
            self._counted = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        # The body next (parsed in this same call when it came with the headers, which
        # disarms it at once).
        self._deadline = self.loop.call_later(self.limits.body_seconds, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.header_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.write(_reply(
                b"408 Request Timeout", "request_timeout",
                f"The request's headers did not arrive within "
                f"{self.limits.header_seconds:g} s (server.header_timeout_seconds)."))
            self.transport.close()


    def _body_too_slow(self) -> None:
        """Answer 408, tell the request reading the body (its receive() returns, and
        `read_body` raises the same 408 for the ledger), and hang up."""
        self._deadline = None
        cycle = self.cycle
        if cycle is None or cycle.response_started or self.transport.is_closing():
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
