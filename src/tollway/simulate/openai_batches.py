"""OpenAI's Files and Batch APIs, as api.openai.com speaks them:

  POST   /v1/files                 upload (multipart: file, purpose); a `batch` file must
                                   be .jsonl
  GET    /v1/files/{id}            the File object
  GET    /v1/files/{id}/content    its bytes
  DELETE /v1/files/{id}
  POST   /v1/batches               input_file_id, endpoint (/v1/chat/completions,
                                   /v1/embeddings, /v1/responses), completion_window
                                   "24h", metadata
  GET    /v1/batches               newest first; after, limit (1..100, default 20)
  GET    /v1/batches/{id}
  POST   /v1/batches/{id}/cancel   cancelling, then cancelled; 400 once it has ended

A batch is validating until its runner starts; a faulty input file (bad JSON, a
missing or repeated custom_id, another url or method, no body) fails it with `errors`.
Then in_progress, finalizing, and completed (expired, cancelled) with an output file
(answered lines) and an error file (lines answered with an error, expired lines as
`batch_expired`), each only when it has lines.
"""

from __future__ import annotations

import time

from aiohttp import web

from tollway.simulate.batch_http import Handler, Refused, json_body, json_response, limit_param
from tollway.simulate.batch_wire import batch_object, file_object, parse_input, result_files
from tollway.simulate.batches import (
    Batch,
    BatchSettings,
    FileBatch,
    Host,
    Runners,
    StoredFile,
    answerer,
    count_ended,
    new_id,
    page,
)
from tollway.simulate.openai_wire import OpenAIDialect
from tollway.simulate.wire import BadRequest, ErrorSpec

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses")
_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_MAX_METADATA = 16


class OpenAIBatches:
    def __init__(self, host: Host, runners: Runners) -> None:
        self.host = host
        self.runners = runners
        self.dialect = OpenAIDialect()
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, FileBatch] = {}
        self._counter = 0

    def reset(self) -> None:
        self.files.clear()
        self.batches.clear()
        self._counter = 0

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/v1/files", self.upload),
                ("GET", "/v1/files/{file_id}", self.get_file),
                ("GET", "/v1/files/{file_id}/content", self.content),
                ("DELETE", "/v1/files/{file_id}", self.delete_file),
                ("POST", "/v1/batches", self.create),
                ("GET", "/v1/batches", self.list),
                ("GET", "/v1/batches/{batch_id}", self.retrieve),
                ("POST", "/v1/batches/{batch_id}/cancel", self.cancel)]

    def _id(self, prefix: str) -> str:
        self._counter += 1
        return new_id(prefix, self.host.config.seed, self._counter)

    def _store(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        f = StoredFile(self._id("file-"), filename, purpose, data, int(time.time()))
        self.files[f.id] = f
        return f

    def _file(self, file_id: str) -> StoredFile:
        f = self.files.get(file_id)
        if f is None:
            raise _not_found("File", file_id)
        return f

    def _batch(self, request: web.Request) -> FileBatch:
        fb = self.batches.get(request.match_info["batch_id"])
        if fb is None:
            raise _not_found("Batch", request.match_info["batch_id"])
        return fb

    # -- files -----------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        file, purpose = form.get("file"), form.get("purpose")
        if not isinstance(file, web.FileField):
            raise BadRequest("Missing required parameter: 'file'.", "file")
        if purpose not in _PURPOSES:
            raise BadRequest(f"Invalid value for 'purpose': {purpose!r}.", "purpose")
        if purpose == "batch" and not file.filename.endswith(".jsonl"):
            raise BadRequest("Invalid file format for Batch API. Must be .jsonl", "file")
        return json_response(file_object(self._store(file.filename, str(purpose),
                                                     file.file.read())))

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        return json_response(file_object(self._file(request.match_info["file_id"])))

    async def content(self, request: web.Request) -> web.StreamResponse:
        f = self._file(request.match_info["file_id"])
        return web.Response(body=f.data, content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.StreamResponse:
        f = self.files.pop(self._file(request.match_info["file_id"]).id)
        return json_response({"id": f.id, "object": "file", "deleted": True})

    # -- batches ---------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        endpoint, metadata = _check_create(body)
        f = self._file(str(body["input_file_id"]))
        if f.purpose != "batch":
            raise BadRequest("The input file must be uploaded with purpose 'batch'.",
                             "input_file_id")
        lines, errors = parse_input(f.data, endpoint)
        batch = Batch(self._id("batch_"), endpoint, lines, BatchSettings.of(self.host.config),
                      errors)
        fb = FileBatch(batch, f.id, metadata)
        self.batches[batch.id] = fb
        counts = self.host.stats.batches
        counts.created += 1
        counts.lines += 0 if errors else len(lines)
        self.runners.start(batch, answerer(self.host, endpoint),
                           lambda b: self._ended(fb))
        return json_response(batch_object(fb))

    def _ended(self, fb: FileBatch) -> None:
        b = fb.batch
        count_ended(self.host.stats, b)
        if b.status == "failed":
            return
        out, errors = result_files(b)
        if out:
            fb.output_file_id = self._store(f"{b.id}_output.jsonl", "batch_output", out).id
        if errors:
            fb.error_file_id = self._store(f"{b.id}_error.jsonl", "batch_output", errors).id

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        return json_response(batch_object(self._batch(request)))

    async def list(self, request: web.Request) -> web.StreamResponse:
        ids, more = page(list(reversed(self.batches)), after=request.query.get("after"),
                         limit=limit_param(request, 20, 100))
        return json_response({"object": "list",
                              "data": [batch_object(self.batches[i]) for i in ids],
                              "first_id": ids[0] if ids else None,
                              "last_id": ids[-1] if ids else None, "has_more": more})

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        fb = self._batch(request)
        if not fb.batch.cancel():
            raise BadRequest(f"Cannot cancel a batch with status '{fb.batch.status}'.")
        return json_response(batch_object(fb))


def _not_found(kind: str, id_: str) -> Refused:
    return Refused(404, ErrorSpec("invalid_request_error", f"No such {kind} object: {id_}",
                                  param="id"))


def _check_create(body: dict[str, object]) -> tuple[str, dict[str, str] | None]:
    """The batch's endpoint and metadata, once the request is known to be valid."""
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(name), str):
            raise BadRequest(f"Missing required parameter: '{name}'.", name)
    endpoint = str(body["endpoint"])
    if endpoint not in ENDPOINTS:
        raise BadRequest(f"Invalid value for 'endpoint': {endpoint!r}; this server batches "
                         f"{', '.join(ENDPOINTS)}.", "endpoint")
    if body["completion_window"] != "24h":
        raise BadRequest("Invalid value for 'completion_window': only '24h' is supported.",
                         "completion_window")
    metadata = body.get("metadata")
    if metadata is not None and not (
            isinstance(metadata, dict) and len(metadata) <= _MAX_METADATA
            and all(isinstance(v, str) for v in metadata.values())):
        raise BadRequest("Invalid 'metadata': at most 16 string values.", "metadata")
    return endpoint, metadata
