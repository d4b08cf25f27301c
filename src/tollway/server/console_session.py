"""Signing in to the console: `/console/session`.

    POST   {"key": "tw-…" or the master key}  checks the key (Gateway.authenticate) and
           sets an HttpOnly, SameSite=Strict cookie holding a new session's opaque token
    GET    who is signed in (and whether the gateway is open: no master key)
    DELETE sign out: the session is closed and the cookie cleared

The key itself is read from the body once and never kept: the session stands for the
key's id or the master (policy/sessions.py). Every method needs the console's header
`x-tollway-console: 1`, as every request the session authenticates does
(`asgi.Edge.session`): a form or a page of another site cannot send it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec

from tollway.errors import Forbidden, InvalidRequest, MethodNotAllowed, TollwayError
from tollway.gateway import Gateway
from tollway.policy import auth
from tollway.policy.auth import Caller
from tollway.policy.sessions import SESSION_SECONDS
from tollway.server.admin import decode
from tollway.server.asgi import (
    SESSION_COOKIE,
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    check_json_content_type,
    edge,
    json_bytes,
    read_body,
    send_json,
)
from tollway.server.console import SECURITY_HEADERS

MAX_BODY = 4096
T = TypeVar("T")


class SignIn(msgspec.Struct, forbid_unknown_fields=True):
    key: str


class ConsoleApi:
    """One of the console's own endpoints: its header required (see the docstring),
    the methods in `allow`, errors in OpenAI's shape, nothing cached, the console's
    security headers. Subclasses give the JSON body (`answer`), and may add headers."""

    allow: str

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def answer(self, scope: Scope, receive: Receive, headers: Headers) -> Any:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        e = edge(scope)
        headers: Headers = [(b"x-request-id", e.request_id.encode()),
                            (b"cache-control", b"no-store"), *SECURITY_HEADERS]
        try:
            if not e.console:
                raise Forbidden("The console's API takes the header 'x-tollway-console: 1'.",
                                code="console_header_required")
            if scope["method"] not in self.allow.split(", "):
                raise MethodNotAllowed(f"{scope['method']} is not allowed on "
                                       f"{scope['path']}; use {self.allow}.")
            body = await self.answer(scope, receive, headers)
        except TollwayError as err:
            if err.status == 405:
                headers.append((b"allow", self.allow.encode()))
            await send_json(send, err.status, err.to_json(), [*headers, *err.headers()])
            return
        except ClientGone:
            return
        await send_json(send, 200, json_bytes(body), headers)


class ConsoleSession(ConsoleApi):
    allow = "GET, POST, DELETE"

    async def answer(self, scope: Scope, receive: Receive, headers: Headers) -> Any:
        token = edge(scope).session
        caller: Caller | None = None
        if scope["method"] == "POST":
            caller, new = await self._sign_in(scope, receive)
            headers.append(_cookie(scope, new, SESSION_SECONDS))
        elif scope["method"] == "DELETE":
            if token is not None:
                await self._store("sign out", self.gateway.sessions.close(token))
            headers.append(_cookie(scope, "", 0))
        else:
            caller = await self._current(token)
            if caller is None and token is not None:  # ended: clear its cookie
                headers.append(_cookie(scope, "", 0))
        return self._view(caller)

    async def _sign_in(self, scope: Scope, receive: Receive) -> tuple[Caller, str]:
        check_json_content_type(scope)
        secret = decode(await read_body(scope, receive, MAX_BODY), SignIn).key.strip()
        caller = await self.gateway.authenticate(secret or None, Caller())
        who = auth.identity(caller, self.gateway.config.auth)
        if who is None:
            raise InvalidRequest("That is not a key of this gateway: sign in with a virtual "
                                 "key (tw-…) or the master key.", param="key")
        return caller, await self._store("sign in", self.gateway.sessions.open(who))

    async def _current(self, token: str | None) -> Caller | None:
        """Who the session is; None for nobody (no session, or one that ended)."""
        if token is None:
            return None
        try:
            caller = await self.gateway.authenticate(None, Caller(), token)
        except TollwayError as err:
            if err.status != 401:
                raise
            return None
        return caller if caller.master or caller.key is not None else None

    def _store(self, doing: str, op: Awaitable[T]) -> Awaitable[T]:
        return self.gateway.outages.closed(
            "cache", f"The session store is unreachable, so you cannot {doing} right now.", op)

    def _view(self, caller: Caller | None) -> dict[str, Any]:
        cfg = self.gateway.config.auth
        out: dict[str, Any] = {"signed_in": caller is not None,
                               "role": None, "key": None,
                               # Open: no key is needed (no master key configured).
                               "open": not auth.keys_required(cfg),
                               "admin": bool(cfg.master_key)}
        if caller is not None and caller.master:
            out["role"] = "master"
        elif caller is not None and caller.key is not None:
            k = caller.key
            out["role"] = "key"
            out["key"] = {"id": k.id, "name": k.name, "hint": k.hint, "team": k.team,
                          "user": k.user, "models": k.models,
                          "budgets": msgspec.to_builtins(k.budgets)}
        return out


def _cookie(scope: Scope, token: str, max_age: float) -> tuple[bytes, bytes]:
    """The session cookie: out of scripts' reach (HttpOnly), never sent by another
    site's page (SameSite=Strict), only over https when the console came over https —
    to this server, or to the proxy in front that says so (`X-Forwarded-Proto`;
    believed without a list of trusted proxies, as it can only make the cookie
    stricter)."""
    https = scope.get("scheme") == "https" or any(
        k == b"x-forwarded-proto" and bytes(v).strip().lower() == b"https"
        for k, v in scope["headers"])
    secure = "; Secure" if https else ""
    return (b"set-cookie", f"{SESSION_COOKIE}={token}; Path=/; Max-Age={int(max_age)}; "
                           f"HttpOnly; SameSite=Strict{secure}".encode())
