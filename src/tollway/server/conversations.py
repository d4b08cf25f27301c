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
    NotFound,
)
from tollway.gateway import Gateway
from tollway.server.asgi import (
    Scope,
    json_bytes,
    query,
    whole_number,
)
from tollway.server.owned import OwnedEndpoint

LIST_PAGE, MAX_LIST = 100, 1000  # conversations per listing


class ConversationsEndpoint(OwnedEndpoint):
    part = "conversations"
    unreachable = "The conversation store is unreachable; try again shortly."

    def __init__(self, gateway: Gateway, one: bool) -> None:
        super().__init__(gateway, "GET, DELETE" if one else "GET")
        self.one = one  # /v1/conversations/{id}, else the list

    async def answer(self, scope: Scope, owner: str) -> bytes:
        return json_bytes(await self._answer(scope, owner))

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

