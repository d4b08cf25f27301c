"""What a caller owns and reads back (server-side conversations, stored responses): one
edge for every such resource — the method allowed, the key checked, the owner derived
(the calling key's lineage and the end user), the store's outage policy, the error
shape. Another owner's resource is simply not found."""

from __future__ import annotations

from collections.abc import Awaitable

from tollway.errors import MethodNotAllowed, TollwayError
from tollway.gateway import Gateway
from tollway.policy.auth import Caller
from tollway.server.asgi import (
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    edge,
    send_json,
)


class OwnedEndpoint:
    """Subclasses say which store part answers (`part`, and what an outage of it says)
    and how (`answer`: the JSON body for the caller's owner)."""

    part: str
    unreachable: str

    def __init__(self, gateway: Gateway, allow: str) -> None:
        self.gateway = gateway
        self.allow = allow  # e.g. "GET, DELETE"

    def error(self, err: TollwayError) -> bytes:
        """An error's body: OpenAI's shape (Anthropic's message batches write theirs)."""
        return err.to_json()

    def answer(self, scope: Scope, owner: str) -> Awaitable[bytes]:
        raise NotImplementedError

    async def respond(self, scope: Scope, receive: Receive, caller: Caller
                      ) -> tuple[int, bytes]:
        """The status and body; by default `answer` for the caller's owner (an endpoint
        that reads a body or needs the key itself overrides this)."""
        return 200, await self.answer(scope, caller.with_user(None).owner)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        e = edge(scope)
        headers: Headers = [(b"x-request-id", e.request_id.encode()),
                            (b"cache-control", b"no-store")]
        try:
            if scope["method"] not in self.allow.split(", "):
                raise MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; "
                                       f"use {self.allow}.")
            caller = await self.gateway.authenticate(e.api_key, Caller(user=e.user), e.session)
            status, body = await self.gateway.outages.closed(
                self.part, self.unreachable, self.respond(scope, receive, caller))
        except TollwayError as err:
            if err.status == 405:
                headers.append((b"allow", self.allow.encode()))
            await send_json(send, err.status, self.error(err), [*headers, *err.headers()])
            return
        except ClientGone:
            return
        await send_json(send, status, body, headers)
