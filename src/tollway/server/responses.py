"""OpenAI's Responses API:

    POST   /v1/responses                       the chat path, in the Responses dialect
    GET    /v1/responses/{id}                  a stored response
    DELETE /v1/responses/{id}                  delete it, for good
    GET    /v1/responses/{id}/input_items      the input items it answered (?limit=,
                                               order=asc|desc, after=)

`POST` is a `ChatEndpoint` with the `RESPONSES` dialect, so every policy of the chat path
applies unchanged; the dialect binds per request (`bind`): it parses the body
(`wire/responses.py`), puts the items of the response it continues
(`previous_response_id`) in front — from Tollway's own store, so a conversation goes on
on any replica and any provider, and never relies on the upstream's storage — and
answers with a Response object or Responses events (`wire/responses_stream.py`),
storing the response (unless `store` is false) once it is complete: a JSON answer
before it is sent, a stream before `response.completed`.

Responses are owned like server-side conversations (`server/conversations.py`): by the
calling key's lineage and the end user (`x-tollway-user`, else the body's `user` when
created; else the key's user); another owner's response is simply not found.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tollway.config import ServerConfig
from tollway.errors import NotFound, TollwayError
from tollway.gateway import Gateway
from tollway.gateway.call import Call
from tollway.gateway.pipeline import Pipeline
from tollway.server.asgi import (
    Scope,
    json_bytes,
    query,
    whole_number,
)
from tollway.server.chat import Dialect
from tollway.server.owned import OwnedEndpoint
from tollway.store.base import StoredResponse
from tollway.types import Answer, ChatRequest, Reply, ReplyStream
from tollway.wire import responses as wire
from tollway.wire import responses_native as native
from tollway.wire.expect import bad_value
from tollway.wire.responses_items import native_only, new_id, stored_items
from tollway.wire.responses_stream import events, failed
from tollway.wire.sse import iter_chunks

log = logging.getLogger("tollway")
UNREACHABLE = "The response store is unreachable; try again shortly."
LIST_PAGE, MAX_LIST = 20, 100  # input items per page, as OpenAI's


async def _bind(gateway: Gateway, call: Call, body: bytes
                ) -> tuple[ChatRequest, Dialect[ChatRequest]]:
    req = wire.parse_request(body)
    if req.only is not None and not _native_route(gateway, req.chat.model):
        raise native_only(req.only, req.kind)
    owner = call.caller.with_user(req.chat.user).owner  # as `Call.begin` will settle it
    previous = []
    if req.previous_response_id is not None:
        found = await gateway.outages.closed("responses", UNREACHABLE, gateway.store.responses
                                             .get(owner, req.previous_response_id))
        if found is None:
            raise NotFound(f"Previous response with id '{req.previous_response_id}' not "
                           "found.", param="previous_response_id",
                           code="previous_response_not_found")
        previous = stored_items(found.input_items, found.response)
    draft = wire.Draft(new_id("resp"), int(gateway.clock()), req.echo)
    wire.assemble(req, previous, gateway.config.server.max_messages, draft)

    async def keep(response: bytes) -> None:
        if not req.store:
            return
        record = StoredResponse(owner, draft.id, gateway.clock(), response,
                                draft.stored_items())
        await gateway.outages.open("responses", "stored", gateway.store.responses.put(record))

    def reply(r: Reply) -> bytes:
        if r.native is not None:
            draft.native = True
            return json_bytes(native.as_gateways(draft, r.native))
        return json_bytes(wire.answered(draft, r.body, r.model, r.usage, int(gateway.clock())))

    def frames(stream: ReplyStream, _: int) -> Any:
        return native.events(iter_chunks(stream.frames), draft, stream, keep,
                             lambda chunks: events(chunks, draft, stream.model, keep))

    bound = Dialect(parse=_unbound, reply=reply, frames=frames, stream_end=b"",
                    stream_error=lambda e: failed(draft, req.chat.model, e),
                    error=wire.error_body, handle=_chat, kept=keep)
    return req.chat, bound


def _chat(pipeline: Pipeline) -> Callable[[Call, ChatRequest], Awaitable[Answer]]:
    return pipeline.chat
def _native_route(gateway: Gateway, model: str) -> bool:
    """Does the route `model` names have a deployment that speaks the Responses API
    natively (on it or its fallbacks)? An unknown model: left to routing (its 404)."""
    route = gateway.routes.find(model)
    if route is None:
        return True
    return any(d.responses_native for pool in (route.chain or [route.pool])
               for d in pool.deployments)


def _unbound(body: bytes, server: ServerConfig) -> ChatRequest:
    raise AssertionError("the Responses dialect is bound per request (bind)")


def _unbound_reply(_: Any, *__: Any) -> Any:
    raise AssertionError("the Responses dialect is bound per request (bind)")


RESPONSES = Dialect(parse=_unbound, reply=_unbound_reply, frames=_unbound_reply,
                    stream_end=b"", stream_error=TollwayError.to_json,
                    error=TollwayError.to_json, handle=_chat, bind=_bind)


class ResponsesEndpoint(OwnedEndpoint):
    """GET and DELETE /v1/responses/{id}; GET /v1/responses/{id}/input_items."""

    part, unreachable = "responses", UNREACHABLE

    def __init__(self, gateway: Gateway, *, items: bool = False) -> None:
        super().__init__(gateway, "GET" if items else "GET, DELETE")
        self.items = items

    async def answer(self, scope: Scope, owner: str) -> bytes:
        rid = scope["path_params"]["id"]
        store = self.gateway.store.responses
        if not wire.RESPONSE_ID.fullmatch(rid):
            raise _missing(rid[:128])
        if scope["method"] == "DELETE":
            if not await store.delete(owner, rid):
                raise _missing(rid)
            return json_bytes({"id": rid, "object": "response.deleted", "deleted": True})
        found = await store.get(owner, rid)
        if found is None:
            raise _missing(rid)
        if not self.items:
            return found.response
        return json_bytes(_page(orjson.loads(found.input_items), query(
            scope, ("limit", "order", "after", "include"))))


def _page(items: list[dict[str, Any]], q: dict[str, str]) -> dict[str, Any]:
    limit = whole_number(q.get("limit"), "limit", LIST_PAGE, 1, MAX_LIST)
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_value("order", f"expected asc or desc, got {order[:40]!r}")
    if order == "desc":
        items.reverse()
    after = q.get("after")
    if after is not None:
        at = next((i for i, item in enumerate(items) if item.get("id") == after), None)
        if at is None:
            raise bad_value("after", f"no input item {after[:128]!r} in this response")
        items = items[at + 1:]
    page = items[:limit]
    return {"object": "list", "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit}


def _missing(rid: str) -> NotFound:
    return NotFound(f"No response with id '{rid}' for this key (and end user). Responses "
                    "belong to the key and user that created them.", param="response_id")
