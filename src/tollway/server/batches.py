"""OpenAI's Files and Batches APIs: upload a JSONL of requests, make a batch of it, poll
it, download its results — what `client.files.create`, `client.batches.create`,
`batches.retrieve` and `files.content` of the official SDK call.

A file is checked line by line at upload (every bad line named: wire/batch.py) and
belongs to the key that uploaded it (its lineage), like stored responses. Creating a
batch checks every line's model against the routes and the key, then reserves the
whole batch's worst case on the budgets — refused up front, naming the budget, when it
cannot fit — before a single line runs (`batch_runner.py` runs them).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import msgspec
import orjson
from starlette.requests import Request

from tollway.errors import InvalidRequest, NotFound, PayloadTooLarge, TollwayError
from tollway.gateway import Gateway
from tollway.policy.auth import Caller
from tollway.server.asgi import Scope, json_bytes, query, whole_number
from tollway.server.batch_line import Owner
from tollway.server.batch_runner import BatchMeta, BatchRunner, batch_json
from tollway.server.owned import OwnedEndpoint
from tollway.store.base import BatchLine, BatchRecord, StoredFile
from tollway.wire import batch as batch_wire

UNREACHABLE = "The batch store is unreachable, so files and batches cannot be read now."
FILE_ID = re.compile(r"file-[0-9a-f]{24}")
BATCH_ID = re.compile(r"batch_[0-9a-f]{24}")
WINDOWS = {"24h": 86_400.0}
MAX_FILE_BYTES = 200 * 1024 * 1024  # OpenAI's limit for a batch input file


def file_json(f: StoredFile) -> bytes:
    return json_bytes({"id": f.id, "object": "file", "bytes": f.size,
                       "created_at": int(f.created_at), "filename": f.filename,
                       "purpose": f.purpose, "status": "processed", "expires_at": None,
                       "status_details": None})


def _no_file(fid: str) -> NotFound:
    return NotFound(f"No file with id '{fid[:64]}' for this key. Files belong to the key "
                    "that uploaded them.", param="file_id")


def _no_batch(bid: str) -> NotFound:
    return NotFound(f"No batch with id '{bid[:64]}' for this key. Batches belong to the "
                    "key that created them.", param="batch_id")


class FilesEndpoint(OwnedEndpoint):
    """POST/GET /v1/files; GET, DELETE /v1/files/{id}; GET /v1/files/{id}/content."""

    part, unreachable = "batches", UNREACHABLE

    def __init__(self, gateway: Gateway, *, one: bool = False, content: bool = False) -> None:
        super().__init__(gateway, "GET" if content else "GET, DELETE" if one else "GET, POST")
        self.one, self.content = one, content

    async def respond(self, scope: Scope, receive: Any, caller: Caller) -> tuple[int, bytes]:
        owner = caller.with_user(None).owner
        store = self.gateway.store.batches
        if not self.one:
            if scope["method"] == "POST":
                return 200, await self._upload(scope, receive, owner)
            q = query(scope, ("purpose", "after", "limit", "order"))
            limit = whole_number(q.get("limit"), "limit", 100, 1, 10_000)
            files = await store.list_files(owner, q.get("purpose"), q.get("after"), limit + 1)
            return 200, json_bytes({"object": "list",
                                    "data": [orjson.loads(file_json(f)) for f in files[:limit]],
                                    "has_more": len(files) > limit})
        fid = scope["path_params"]["id"]
        found = await store.get_file(owner, fid) if FILE_ID.fullmatch(fid) else None
        if found is None:
            raise _no_file(fid)
        if self.content:
            data = await store.file_content(owner, fid)
            if data is None:
                raise _no_file(fid)
            return 200, data
        if scope["method"] == "DELETE":
            await store.delete_file(owner, fid)
            return 200, json_bytes({"id": fid, "object": "file", "deleted": True})
        return 200, file_json(found)

    async def _upload(self, scope: Scope, receive: Any, owner: str) -> bytes:
        form = await Request(scope, receive).form()
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "batch":
            raise InvalidRequest(f"purpose must be 'batch' (got {str(purpose)[:40]!r}): this "
                                 "gateway keeps files for batches only.", param="purpose")
        if upload is None or isinstance(upload, str):
            raise InvalidRequest("Send the JSONL as the multipart field 'file'.", param="file")
        content = await upload.read()
        if len(content) > MAX_FILE_BYTES:
            raise PayloadTooLarge(f"The file is {len(content):,} bytes; a batch file may have "
                                  f"at most {MAX_FILE_BYTES:,}.")
        try:
            batch_wire.parse(content)
        except batch_wire.BadFile as e:
            raise InvalidRequest(f"The file is not a valid batch input: {e}.",
                                 param="file") from None
        f = StoredFile(owner, "file-" + os.urandom(12).hex(), "batch",
                       upload.filename or "batch.jsonl", len(content), time.time())
        await self.gateway.store.batches.put_file(f, content)
        return file_json(f)


class BatchesEndpoint(OwnedEndpoint):
    """POST/GET /v1/batches; GET /v1/batches/{id}; POST /v1/batches/{id}/cancel."""

    part, unreachable = "batches", UNREACHABLE

    def __init__(self, gateway: Gateway, runner: BatchRunner, *, one: bool = False,
                 cancel: bool = False) -> None:
        super().__init__(gateway, "POST" if cancel else "GET" if one else "GET, POST")
        self.runner, self.one, self.cancel = runner, one, cancel

    async def respond(self, scope: Scope, receive: Any, caller: Caller) -> tuple[int, bytes]:
        owner = caller.with_user(None).owner
        store = self.gateway.store.batches
        if not self.one:
            if scope["method"] == "POST":
                return 200, await self._create(scope, receive, caller, owner)
            q = query(scope, ("after", "limit"))
            limit = whole_number(q.get("limit"), "limit", 20, 1, 100)
            found = await store.list_batches(owner, q.get("after"), limit + 1,
                                             prefix="batch_")  # not message batches
            data = [orjson.loads(batch_json(b)) for b in found[:limit]]
            return 200, json_bytes({"object": "list", "data": data,
                                    "first_id": data[0]["id"] if data else None,
                                    "last_id": data[-1]["id"] if data else None,
                                    "has_more": len(found) > limit})
        bid = scope["path_params"]["id"]
        batch = await store.get_batch(owner, bid) if BATCH_ID.fullmatch(bid) else None
        if batch is None:
            raise _no_batch(bid)
        if self.cancel:
            batch = await self.runner.cancel(batch)
        return 200, batch_json(batch)

    async def _create(self, scope: Scope, receive: Any, caller: Caller, owner: str) -> bytes:
        body = await Request(scope, receive).body()
        try:
            ask = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise InvalidRequest(f"The body is not JSON: {e}.") from None
        if not isinstance(ask, dict):
            raise InvalidRequest("The body must be a JSON object.")
        fid, endpoint = ask.get("input_file_id"), ask.get("endpoint")
        window = ask.get("completion_window", "24h")
        if endpoint not in batch_wire.ENDPOINTS:
            raise InvalidRequest(f"endpoint must be one of {', '.join(batch_wire.ENDPOINTS)} "
                                 f"(got {str(endpoint)[:60]!r}).", param="endpoint")
        if window not in WINDOWS:
            raise InvalidRequest(f"completion_window must be '24h' (got {str(window)[:20]!r}).",
                                 param="completion_window")
        metadata = ask.get("metadata")
        if metadata is not None and not (isinstance(metadata, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
            raise InvalidRequest("metadata must map strings to strings.", param="metadata")
        store = self.gateway.store.batches
        found = await store.get_file(owner, fid) if isinstance(fid, str) else None
        content = await store.file_content(owner, found.id) if found is not None else None
        if found is None or content is None or found.purpose != "batch":
            raise _no_file(str(fid))
        lines = batch_wire.parse(content)
        wrong = [ln for ln in lines if ln.url != endpoint]
        if wrong:
            raise InvalidRequest(
                f"Line {wrong[0].index + 1} of the file is for {wrong[0].url}, but this batch "
                f"is for {endpoint}: every line must use the batch's endpoint.",
                param="input_file_id")
        now = time.time()
        meta = BatchMeta(Owner.of(caller), metadata, window, times={"created": now})
        batch = BatchRecord(owner=owner, id="batch_" + os.urandom(12).hex(), endpoint=endpoint,
                            input_file_id=found.id, status="in_progress", created_at=now,
                            expires_at=now + WINDOWS[window], total=len(lines), completed=0,
                            failed=0, cancelled=0, cost_pico=0, hold_id=None,
                            meta=msgspec.json.encode(meta))
        rows = [BatchLine(batch.id, ln.index, ln.custom_id, ln.body, "pending", None, 0, 0)
                for ln in lines]
        await self.runner.create(batch, rows, caller)
        return batch_json(batch)


__all__ = ["BatchesEndpoint", "FilesEndpoint", "TollwayError"]
