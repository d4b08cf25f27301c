"""Small ASGI helpers: read a bounded body, send JSON, stream SSE, watch for disconnects.

Hand-written instead of Starlette's Request/StreamingResponse: on SSE this is ~3.5x
faster here, and it lets one watcher cancel the upstream call the moment the client
goes away.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from tollway.errors import (
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    TollwayError,
    UnsupportedMediaType,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_CT = (b"content-type", b"application/json")
log = logging.getLogger("tollway")


class Edge:
    """What the edge needs from the request headers, read in one pass."""

    __slots__ = ("api_key", "cache_control", "cache_headers", "console", "content_length",
                 "content_type", "conversation", "feature", "history", "history_tokens",
                 "request_id", "session", "stored_conversation", "tier", "user")

    def __init__(self, scope: Scope) -> None:
        rid = ctype = clen = cookie = None
        self.console = False  # x-tollway-console: 1, which the console's requests carry
        self.tier: str | None = None
        self.api_key: str | None = None
        self.user: str | None = None
        self.feature: str | None = None
        self.conversation: str | None = None
        self.stored_conversation: str | None = None
        self.history: str | None = None
        self.history_tokens: str | None = None
        self.cache_control: str | None = None
        self.cache_headers: list[tuple[bytes, str]] | None = None  # x-tollway-cache*
        for k, v in scope["headers"]:
            if k == b"content-type":
                ctype = bytes(v)
            elif k == b"content-length":
                clen = bytes(v)
            elif k == b"authorization":
                scheme, _, token = bytes(v).decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    self.api_key = token.strip()
            elif k == b"x-api-key":
                self.api_key = self.api_key or bytes(v).decode("latin-1").strip() or None
            elif k == b"cache-control":
                self.cache_control = bytes(v).decode("latin-1")
            elif k.startswith(b"x-"):
                if k == b"x-request-id":
                    rid = bytes(v)
                elif k.startswith(b"x-tollway-"):
                    self._tollway_header(k, bytes(v).decode("latin-1").strip()[:256])
            elif k == b"cookie":
                cookie = bytes(v)
        # The console's session stands in for a key only when no key is presented and
        # the request carries both the cookie and the console's header, which a page
        # of another site cannot send (a CSRF defence beyond the cookie's SameSite).
        self.session: str | None = (session_token(cookie) if cookie is not None and
                                    self.console and self.api_key is None else None)
        self.content_type: bytes | None = ctype
        self.content_length: int | None = int(clen) if clen and clen.isdigit() else None
        # Keep the caller's id for tracing if it is sane; otherwise make one.
        self.request_id: str = (rid.decode() if rid and len(rid) <= 128 and rid.isascii()
                                else "req_" + os.urandom(12).hex())

    def _tollway_header(self, k: bytes, v: str) -> None:
        if not v:
            return
        if k == b"x-tollway-tier":
            self.tier = v
        elif k == b"x-tollway-user":
            self.user = v
        elif k == b"x-tollway-feature":
            self.feature = v
        elif k == b"x-tollway-conversation-id":
            self.conversation = v
        elif k == b"x-tollway-conversation":
            self.stored_conversation = v
        elif k == b"x-tollway-history":
            self.history = v
        elif k == b"x-tollway-console":
            self.console = v == "1"
        elif k == b"x-tollway-history-tokens":
            self.history_tokens = v
        elif k.startswith(b"x-tollway-cache"):
            if self.cache_headers is None:
                self.cache_headers = []
            self.cache_headers.append((k, v))


SESSION_COOKIE = "tollway_session"


def session_token(cookie: bytes) -> str | None:
    """The console's session token in a Cookie header, if there is one."""
    for part in cookie.decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value:
            return value[:128]
    return None


def edge(scope: Scope) -> Edge:
    e: Edge = scope["tollway.edge"]
    return e


def query(scope: Scope, allowed: Collection[str]) -> dict[str, str]:
    """The query string's parameters; one not in `allowed` is a 400 naming it."""
    out: dict[str, str] = {}
    for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                          keep_blank_values=True):
        if k not in allowed:
            raise InvalidRequest(f"{k}: unknown query parameter; expected "
                                 f"{', '.join(allowed)}", param=k)
        out[k] = v
    return out


def whole_number(text: str | None, param: str, default: int, lo: int, hi: int) -> int:
    """A query parameter that is a whole number in [lo, hi]; `default` when absent."""
    if text is None:
        return default
    # isascii: str.isdigit() is also true of digits int() does not read ('²').
    if not (text.isascii() and text.isdigit()) or not lo <= int(text) <= hi:
        raise InvalidRequest(f"{param}: a whole number from {lo} to {hi}, got {text!r}",
                             param=param)
    return int(text)


def check_json_content_type(scope: Scope) -> None:
    ct = edge(scope).content_type
    if ct is None:
        return  # lenient: a missing type is taken as JSON
    media = ct.split(b";", 1)[0].strip().lower()
    if media != b"application/json" and not media.endswith(b"+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got '{media.decode('latin-1')}'. "
            "(With curl, add -H 'Content-Type: application/json'.)")


# Set in the scope by the connection (server/connections.py) when the body did not
# arrive within server.body_timeout_seconds: it has answered 408 and hung up.
BODY_TIMED_OUT = "tollway.body_timed_out"


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = edge(scope).content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"Request body is {declared} bytes; the limit is {limit}.")
    parts: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            if BODY_TIMED_OUT in scope:  # the ledger says 408, as the client was told
                raise RequestTimeout(scope[BODY_TIMED_OUT])
            raise ClientGone
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"Request body is over the {limit}-byte limit.")
            parts.append(chunk)
        if not msg.get("more_body", False):
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


class ClientGone(Exception):
    """The client disconnected; nothing more can be sent."""


async def send_json(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [JSON_CT, (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, err: TollwayError, headers: Headers) -> None:
    await send_json(send, err.status, err.to_json(), [*headers, *err.headers()])


def json_bytes(obj: Any) -> bytes:
    return orjson.dumps(obj)


SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
]


async def send_sse(send: Send, frames: AsyncGenerator[bytes, None], headers: Headers,
                   end: Callable[[], Awaitable[bytes]],
                   on_error: Callable[[TollwayError], bytes]) -> None:
    """Stream `frames`, then `end()` (called once the frames are done). A failure
    after the headers went out can only be told in-band: `on_error` writes it in the
    dialect's own event format."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [*SSE_HEADERS, *headers]})
    try:
        async for blob in frames:
            await send({"type": "http.response.body", "body": blob, "more_body": True})
        tail = await end()
    except TollwayError as e:
        tail = on_error(e)
    except Exception as e:  # a bug: the stream already began, so say it in-band
        log.exception("error while streaming")
        tail = on_error(TollwayError(f"Internal error while streaming ({type(e).__name__})."))
    finally:
        await frames.aclose()  # on cancellation too: it closes the upstream connection
    await send({"type": "http.response.body", "body": tail})


class DisconnectWatch:
    """Cancels the handling task when the client disconnects before we finish.

    One extra task per request: it waits on `receive()`, which (after the body is
    read) only returns when the connection closes. `finish()` drops both task
    references: otherwise watch -> watcher task -> its CancelledError traceback ->
    frame -> watch is a reference cycle per request, and the cyclic GC freeing them
    cost ~16% of the gateway's CPU and tens of ms of p99.
    """

    __slots__ = ("_task", "_watcher", "gone")

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._task: asyncio.Task[Any] | None = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = asyncio.create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                task = self._task
                if task is not None:  # still handling: the client left before the answer
                    self.gone = True
                    task.cancel()
                return

    def finish(self) -> None:
        watcher, self._watcher, self._task = self._watcher, None, None
        if watcher is not None:
            watcher.cancel()
