"""The upstream HTTP transport every HTTP provider shares: POST a JSON body, or open an
SSE stream, with timeouts and upstream failures mapped to Tollway errors in one place.

A `Transport` holds one pooled aiohttp session, made lazily inside the running loop; it
is injected into the providers and closed by its owner (`Gateway.close`), so a gateway
used as a library leaves no session behind. aiohttp is ~13x faster than httpx as a
proxy's upstream client here.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import struct
import termios
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import aiohttp
import orjson

from tollway import tracing
from tollway.errors import TollwayError, UpstreamError, UpstreamTimeout
from tollway.providers.base import error_from_status, ratelimit_headers
from tollway.types import Deployment, Flight, UpstreamDialect
from tollway.wire.sse import SseEvent, split_events


class Transport:
    """One pooled HTTP client session for every upstream call of a gateway."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=0,  # pacing is the router's job, not the connection pool's
                ttl_dns_cache=300,
                keepalive_timeout=30,
                enable_cleanup_closed=True,
            )
            # No skip_auto_headers: aiohttp's slow path for it cost ~8% of a request.
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def post_json(self, url: str, body: bytes, headers: dict[str, str],
                        dep: Deployment) -> tuple[dict[str, Any], dict[str, str]]:
        """POST and return the parsed JSON answer and the upstream's rate-limit headers;
        any failure is a TollwayError. The answer's first byte must come within the
        first-token timeout (aiohttp's read timeout: every wait for bytes)."""
        if tracing.ON:  # the attempt's span context: the upstream continues the trace
            headers = tracing.outgoing(headers)
        try:
            async with self.session().post(url, data=body, headers=headers,
                                           timeout=json_timeout(dep)) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise error_from_status(resp.status, raw, resp.headers, dep)
                ratelimit = ratelimit_headers(resp.headers)
        except TimeoutError as e:
            raise timeout_error(dep, e, stream=False) from None
        except aiohttp.ClientError as e:
            raise connection_error(dep, e) from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"Upstream {where(dep)} answered with invalid JSON.") from None
        if not isinstance(data, dict):
            raise UpstreamError(f"Upstream {where(dep)} answered with a non-object JSON body.")
        return data, ratelimit

    async def open_stream(self, url: str, body: bytes, headers: dict[str, str],
                          dep: Deployment, dialect: UpstreamDialect = "openai") -> OpenStream:
        """POST, then wait (within the first-token timeout) for the first complete SSE
        event, so every failure before the first byte is raised here, where it can still
        be retried. From then on, each wait for bytes is bounded by the idle timeout."""
        resp: aiohttp.ClientResponse | None = None
        if tracing.ON:
            headers = tracing.outgoing(headers)
        sent = time.monotonic()
        try:
            async with asyncio.timeout(dep.first_token_timeout):
                resp = await self.session().post(url, data=body, headers=headers,
                                                 timeout=stream_timeout(dep))
                if resp.status != 200:
                    raw = await resp.read()
                    raise error_from_status(resp.status, raw, resp.headers, dep)
                first = b""
                while b"\n\n" not in first and b"\r\n\r\n" not in first:
                    piece = await resp.content.readany()
                    if not piece:
                        break
                    first += piece
        except BaseException as e:
            if resp is not None:
                resp.close()
            if isinstance(e, TimeoutError):
                raise timeout_error(dep, e, stream=True) from None
            if isinstance(e, aiohttp.ClientError):
                raise connection_error(dep, e) from None
            raise
        # aiohttp re-arms its read timeout on every read and pauses it while we do not
        # read (a slow client is not a silent upstream): exactly an idle timeout.
        conn = resp.connection
        if conn is not None and conn.protocol is not None:
            conn.protocol.read_timeout = dep.idle_timeout
            conn.protocol.start_timeout()
        return OpenStream(resp, first, Flight(sent, time.monotonic(), first, dialect=dialect))


def where(dep: Deployment) -> str:
    return f"{dep.provider}/{dep.model}"


@cache
def json_timeout(dep: Deployment) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=dep.total_timeout, sock_connect=dep.connect_timeout,
                                 sock_read=dep.first_token_timeout)


@cache
def stream_timeout(dep: Deployment) -> aiohttp.ClientTimeout:
    """The first event's wait is bounded by open_stream itself, the rest by the idle
    timeout it sets once that event is in."""
    return aiohttp.ClientTimeout(total=dep.total_timeout, sock_connect=dep.connect_timeout)


def timeout_error(dep: Deployment, e: TimeoutError, *, stream: bool) -> UpstreamTimeout:
    """Which bound an attempt ran into before its first byte: connecting, the first
    token (a stream's plain timeout is open_stream's own; a JSON reply's is aiohttp's
    read timeout), or the total."""
    if isinstance(e, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(f"Could not connect to upstream {where(dep)} within "
                               f"{dep.connect_timeout:g}s (timeouts.connect).")
    if stream or isinstance(e, aiohttp.SocketTimeoutError):
        what = "sent no first token" if stream else "sent no answer"
        return UpstreamTimeout(f"Upstream {where(dep)} {what} within "
                               f"{dep.first_token_timeout:g}s (timeouts.first_token).")
    return UpstreamTimeout(f"Upstream {where(dep)} did not answer within "
                           f"{dep.total_timeout:g}s (timeouts.total).")


def connection_error(dep: Deployment, e: Exception) -> TollwayError:
    kind = type(e).__name__
    if isinstance(e, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return UpstreamError(f"Upstream {where(dep)} dropped the connection ({kind}).")
    return UpstreamError(f"Could not reach upstream {where(dep)} ({kind}: {e}).")


class OpenStream:
    """An upstream SSE stream whose first complete event has arrived. `first` holds
    the bytes read so far (the first event, maybe more, maybe a partial one);
    `ratelimit` the upstream's rate-limit headers; `flight` its timing, for billing."""

    __slots__ = ("first", "flight", "ratelimit", "resp")

    def __init__(self, resp: aiohttp.ClientResponse, first: bytes, flight: Flight) -> None:
        self.resp, self.first, self.flight = resp, first, flight
        self.ratelimit = ratelimit_headers(resp.headers)

    async def pieces(self) -> AsyncIterator[bytes]:
        """Every network read, the first one included."""
        flight = self.flight
        if self.first:
            flight.read_bytes += len(self.first)
            yield self.first
        async for piece in self.resp.content.iter_any():
            flight.read_bytes += len(piece)
            yield piece

    async def batches(self) -> AsyncIterator[list[SseEvent]]:
        """The complete events of each network read, parsed."""
        rest = b""
        async for piece in self.pieces():
            batch, rest = split_events(rest + piece if rest else piece)
            if batch:
                yield batch
        if rest.strip():
            batch, _ = split_events(rest + b"\n\n")
            if batch:
                yield batch

    def cut_short(self) -> None:
        """We close it before its end: note when, and what had arrived unread (the
        provider generated it, and bills it)."""
        flight = self.flight
        flight.closed = time.monotonic()
        conn = self.resp.connection
        if conn is not None and conn.transport is not None:
            sock = conn.transport.get_extra_info("socket")
            if sock is not None:
                flight.queued = _queued_bytes(sock)
        with contextlib.suppress(Exception):  # a broken connection has nothing to give
            flight.unread = self.resp.content.read_nowait()


def _queued_bytes(sock: Any) -> int:
    """Bytes waiting in a socket's receive buffer (FIONREAD; 0 where the OS does not
    say)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        got = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", got)[0])
    return 0


@asynccontextmanager
async def stream_errors(stream: OpenStream, dep: Deployment) -> AsyncGenerator[None, None]:
    """Around reading the rest of a stream: map failures, and always close the
    connection (not release it), which is how the upstream learns the caller went away
    and stops generating."""
    ended = False
    try:
        yield
        ended = True
    except TimeoutError as e:
        if isinstance(e, aiohttp.SocketTimeoutError):
            raise UpstreamTimeout(f"Upstream {where(dep)} stream went silent for "
                                  f"{dep.idle_timeout:g}s (timeouts.idle).") from None
        raise UpstreamTimeout(f"Upstream {where(dep)} stream exceeded "
                              f"{dep.total_timeout:g}s (timeouts.total).") from None
    except aiohttp.ClientError as e:
        raise connection_error(dep, e) from None
    finally:
        if not ended:
            stream.cut_short()
        stream.resp.close()


def parse_event(data: bytes, dep: Deployment) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"Upstream {where(dep)} sent an invalid stream event.") from None
    if not isinstance(obj, dict):
        raise UpstreamError(f"Upstream {where(dep)} sent an invalid stream event.")
    return obj
