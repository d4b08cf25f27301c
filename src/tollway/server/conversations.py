"""A caller's own server-side conversations:

    GET    /v1/conversations          list (most recently updated first; ?limit=)
    GET    /v1/conversations/{id}     read: the system prompt and every stored turn
    DELETE /v1/conversations/{id}     delete it, its turns and its summaries, for good

Authenticated like the chat endpoints; the owner is the calling key's lineage and the
end user named by `x-tollway-user` (else the key's user), as for chat requests. Another
owner's conversation is simply not found. The master key reaches every owner's through
/admin/conversations.
"""

from __future__ import annotations

from typing import Any

from tollway.conversation import thread
from tollway.errors import (
    MethodNotAllowed,
    NotFound,
    TollwayError,
)
from tollway.gateway import Gateway
from tollway.policy.auth import Caller
from tollway.server.asgi import (
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    edge,
    json_bytes,
    query,
    send_error,
    send_json,
    whole_number,
)

LIST_PAGE, MAX_LIST = 100, 1000  # conversations per listing


class ConversationsEndpoint:
    def __init__(self, gateway: Gateway, one: bool) -> None:
        self.gateway = gateway
        self.one = one  # /v1/conversations/{id}, else the list
        self.allow = "GET, DELETE" if one else "GET"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        e = edge(scope)
        headers: Headers = [(b"x-request-id", e.request_id.encode()),
                            (b"cache-control", b"no-store")]
        try:
            if scope["method"] not in self.allow.split(", "):
                raise MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; "
                                       f"use {self.allow}.")
            caller = await self.gateway.authenticate(e.api_key, Caller(user=e.user))
            body = await self.gateway.outages.closed(
                "conversations", "The conversation store is unreachable; try again shortly.",
                self._answer(scope, caller.with_user(None).owner))
        except TollwayError as err:
            if err.status == 405:
                headers.append((b"allow", self.allow.encode()))
            await send_error(send, err, headers)
            return
        except ClientGone:
            return
        await send_json(send, 200, json_bytes(body), headers)

    async def _answer(self, scope: Scope, owner: str) -> dict[str, Any]:
        store = self.gateway.store.conversations
        if not self.one:
            limit = whole_number(query(scope, ("limit",)).get("limit"), "limit", LIST_PAGE, 1,
                                 MAX_LIST)
            found = await store.list(owner, limit)
            return {"object": "list", "data": [thread.summary_view(i) for i in found]}
        cid = thread.check_id(scope["path_params"]["id"], "id")
        if scope["method"] == "DELETE":
            if not await store.delete(owner, cid):
                raise _missing(cid)
            return {"id": cid, "object": "conversation.deleted", "deleted": True}
        stored = await store.load(owner, cid)
        if stored is None:
            raise _missing(cid)
        return thread.view(stored)


def _missing(cid: str) -> NotFound:
    return NotFound(f"No conversation '{cid}' for this key (and end user). Conversations "
                    "belong to the key and user that started them.", param="id")

