"""Anthropic's Message Batches API on the gateway — what `client.messages.batches.create`,
`retrieve`, `list`, `cancel` and `results` of the official SDK call:

  POST /v1/messages/batches                {"requests": [{custom_id, params}]}
  GET  /v1/messages/batches                newest first; before_id / after_id, limit
  GET  /v1/messages/batches/{id}
  POST /v1/messages/batches/{id}/cancel
  GET  /v1/messages/batches/{id}/results   JSONL in input order, once it has ended

The same batches as OpenAI's `/v1/batches` (`batches.py`), with the endpoint
`/v1/messages`: quoted and held at creation, their lines run by `BatchRunner` through
the Messages endpoint's dialect, cancelled and expired alike. Their ids (`msgbatch_…`)
keep each API to its own batches. Unlike Anthropic, `request_counts` move as lines
finish, not only once the batch has ended: the gateway knows, and progress is worth
showing.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from typing import Any, Literal

import msgspec
from starlette.routing import Route

from tollway.accounting.prices import PICO_PER_USD
from tollway.errors import InvalidRequest, NotFound, TollwayError
from tollway.gateway import Gateway
from tollway.policy.auth import Caller
from tollway.server.admin import ANY_METHOD
from tollway.server.asgi import Scope, json_bytes, query, read_body, whole_number
from tollway.server.batch_line import Owner
from tollway.server.batch_runner import PAGE, BatchMeta, BatchRunner, meta_of
from tollway.server.batches import UNREACHABLE, WINDOWS
from tollway.server.owned import OwnedEndpoint
from tollway.store.base import BATCH_ENDED, BatchLine, BatchRecord, BatchStore
from tollway.wire import anthropic as anthropic_wire
from tollway.wire import message_batch as wire

ENDPOINT = "/v1/messages"
ROOT = "/v1/messages/batches"
PREFIX = "msgbatch_"
BATCH_ID = re.compile(PREFIX + r"[0-9a-f]{24}")
ALLOW = {"": "GET, POST", "/{id}": "GET", "/{id}/cancel": "POST", "/{id}/results": "GET"}


def message_batch_routes(gateway: Gateway, runner: BatchRunner) -> list[Route]:
    # Every method: the endpoint refuses the wrong ones in Anthropic's shape.
    return [Route(ROOT + tail, MessageBatchesEndpoint(gateway, runner, tail),
                  methods=ANY_METHOD) for tail in ALLOW]


class MessageBatchesEndpoint(OwnedEndpoint):
    part, unreachable = "batches", UNREACHABLE

    def __init__(self, gateway: Gateway, runner: BatchRunner, tail: str) -> None:
        super().__init__(gateway, ALLOW[tail])
        self.runner, self.tail = runner, tail

    def error(self, err: TollwayError) -> bytes:
        return anthropic_wire.error_body(err)

    async def respond(self, scope: Scope, receive: Any, caller: Caller) -> tuple[int, bytes]:
        owner = caller.with_user(None).owner
        store = self.gateway.store.batches
        if not self.tail:
            if scope["method"] == "POST":
                made = await self._create(scope, receive, caller, owner)
                return 200, json_bytes(message_batch(made, scope))
            return 200, await self._list(scope, store, owner)
        bid = scope["path_params"]["id"]
        batch = await store.get_batch(owner, bid) if BATCH_ID.fullmatch(bid) else None
        if batch is None or batch.endpoint != ENDPOINT:
            raise NotFound(f"Message Batch {bid[:64]} not found for this key. Batches belong "
                           "to the key that created them.")
        ended = batch.status in BATCH_ENDED
        if self.tail == "/{id}/cancel":
            if ended:
                raise InvalidRequest(f"Message Batch {batch.id} has already ended and cannot "
                                     "be canceled.")
            batch = await self.runner.cancel(batch)
        elif self.tail == "/{id}/results":
            if not ended:
                raise InvalidRequest(f"Message Batch {batch.id} has not finished processing; "
                                     "its results are available once it has ended.")
            return 200, await _results(store, batch)
        return 200, json_bytes(message_batch(batch, scope))

    async def _create(self, scope: Scope, receive: Any, caller: Caller,
                      owner: str) -> BatchRecord:
        requests = wire.parse_requests(await read_body(scope, receive, wire.MAX_BYTES))
        now = time.time()
        meta = BatchMeta(Owner.of(caller), times={"created": now})
        batch = BatchRecord(owner=owner, id=PREFIX + os.urandom(12).hex(), endpoint=ENDPOINT,
                            input_file_id="", status="in_progress", created_at=now,
                            expires_at=now + WINDOWS["24h"], total=len(requests),
                            completed=0, failed=0, cancelled=0, cost_pico=0, hold_id=None,
                            meta=msgspec.json.encode(meta))
        lines = [BatchLine(batch.id, i, r.custom_id, r.params, "pending", None, 0, 0)
                 for i, r in enumerate(requests)]
        await self.runner.create(batch, lines, caller)
        return batch

    async def _list(self, scope: Scope, store: BatchStore, owner: str) -> bytes:
        q = query(scope, ("before_id", "after_id", "limit"))
        limit = whole_number(q.get("limit"), "limit", 20, 1, 1000)
        before, after = q.get("before_id"), q.get("after_id")
        if before is not None and after is not None:
            raise InvalidRequest("Give before_id or after_id, not both.", param="before_id")
        if before is None:
            found = await store.list_batches(owner, after, limit + 1, PREFIX)
            page, more = found[:limit], len(found) > limit
        else:
            page, more = await _newer(store, owner, before, limit)
        data = [message_batch(b, scope) for b in page]
        return json_bytes({"data": data, "has_more": more,
                           "first_id": data[0]["id"] if data else None,
                           "last_id": data[-1]["id"] if data else None})


async def _newer(store: BatchStore, owner: str, before: str,
                 limit: int) -> tuple[list[BatchRecord], bool]:
    """The `limit` batches just newer than `before` (newest first), and whether there are
    newer still. The store pages from the newest down, so this reads down to `before`:
    a walk back towards the newest, which is what `before_id` is for."""
    window: deque[BatchRecord] = deque(maxlen=limit + 1)
    after = None
    while page := await store.list_batches(owner, after, PAGE, PREFIX):
        for b in page:
            if b.id == before:
                return list(window)[-limit:], len(window) > limit
            window.append(b)
        after = page[-1].id
    return [], False  # no such batch: as the store answers an unknown `after`


async def _results(store: BatchStore, batch: BatchRecord) -> bytes:
    """Every line's result, in input order."""
    unrun: Literal["canceled", "expired"] = ("expired" if meta_of(batch).ending == "expired"
                                             else "canceled")
    out: list[bytes] = []
    after = -1
    while page := await store.lines(batch.id, after, PAGE):
        out += [wire.result_line(ln.custom_id, ln.result, unrun) for ln in page]
        after = page[-1].index
    return b"".join(out)


def message_batch(batch: BatchRecord, scope: Scope) -> dict[str, Any]:
    """The batch as Anthropic's API shows it, with what it cost so far (`tollway`)."""
    meta = meta_of(batch)
    t = meta.times
    ended = batch.status in BATCH_ENDED
    expiring = meta.ending == "expired"  # ends as expired, not cancelled: not "canceling"
    unrun = batch.cancelled  # lines that will not run, by cancel or expiry
    return {
        "id": batch.id, "type": "message_batch",
        "processing_status": ("ended" if ended else "canceling"
                              if batch.status == "cancelling" and not expiring
                              else "in_progress"),
        "request_counts": {"processing": batch.total - batch.settled_lines,
                           "succeeded": batch.completed, "errored": batch.failed,
                           "canceled": 0 if expiring else unrun,
                           "expired": unrun if expiring else 0},
        "ended_at": wire.rfc3339(t.get(batch.status)) if ended else None,
        "created_at": wire.rfc3339(batch.created_at),
        "expires_at": wire.rfc3339(batch.expires_at), "archived_at": None,
        "cancel_initiated_at": wire.rfc3339(t.get("cancelling")),
        "results_url": _url(scope, f"{ROOT}/{batch.id}/results") if ended else None,
        "tollway": {"cost_usd": batch.cost_pico / PICO_PER_USD},
    }


def _url(scope: Scope, path: str) -> str:
    """Absolute, as Anthropic's is (the SDK fetches it as given), on the host asked."""
    host = next((bytes(v).decode("latin-1") for k, v in scope["headers"] if k == b"host"),
                "localhost")
    return f"{scope.get('scheme', 'http')}://{host}{path}"
