"""Anthropic's Message Batches API, as api.anthropic.com speaks it:

  POST /v1/messages/batches                requests: [{custom_id, params}]
  GET  /v1/messages/batches                newest first; before_id / after_id, limit
                                           (1..1000, default 20)
  GET  /v1/messages/batches/{id}
  POST /v1/messages/batches/{id}/cancel    canceling, then ended; 400 once it has ended
  GET  /v1/messages/batches/{id}/results   JSONL, once it has ended (results_url)

processing_status is in_progress, canceling, then ended; request_counts stay all
`processing` until then. A request's params are checked as it is answered: an invalid
one, or one for a model nobody knows, is an errored result.
"""

from __future__ import annotations

from aiohttp import web

from tollway.simulate.anthropic_wire import AnthropicDialect
from tollway.simulate.batch_http import Handler, Refused, json_body, json_response, limit_param
from tollway.simulate.batch_wire import message_batch, parse_requests, results
from tollway.simulate.batches import (
    ENDED,
    Batch,
    BatchSettings,
    Host,
    Runners,
    answerer,
    count_ended,
    new_id,
    page,
)
from tollway.simulate.wire import BadRequest, ErrorSpec

_ENDPOINT = "/v1/messages"
_ROOT = "/v1/messages/batches"


class AnthropicBatches:
    def __init__(self, host: Host, runners: Runners) -> None:
        self.host = host
        self.runners = runners
        self.dialect = AnthropicDialect()
        self.batches: dict[str, Batch] = {}
        self._counter = 0

    def reset(self) -> None:
        self.batches.clear()
        self._counter = 0

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", _ROOT, self.create),
                ("GET", _ROOT, self.list),
                ("GET", _ROOT + "/{batch_id}", self.retrieve),
                ("POST", _ROOT + "/{batch_id}/cancel", self.cancel),
                ("GET", _ROOT + "/{batch_id}/results", self.results)]

    def _view(self, request: web.Request, b: Batch) -> web.Response:
        return json_response(message_batch(b, _results_url(request, b.id)))

    def _find(self, request: web.Request) -> Batch:
        batch_id = request.match_info["batch_id"]
        b = self.batches.get(batch_id)
        if b is None:
            raise Refused(404, ErrorSpec("not_found_error",
                                         f"Message Batch {batch_id} not found."))
        return b

    async def create(self, request: web.Request) -> web.StreamResponse:
        lines = parse_requests(await json_body(request))
        self._counter += 1
        b = Batch(new_id("msgbatch_01", self.host.config.seed, self._counter), _ENDPOINT,
                  lines, BatchSettings.of(self.host.config), status="in_progress")
        self.batches[b.id] = b
        counts = self.host.stats.batches
        counts.created += 1
        counts.lines += len(lines)
        self.runners.start(b, answerer(self.host, _ENDPOINT),
                           lambda b: count_ended(self.host.stats, b))
        return self._view(request, b)

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        return self._view(request, self._find(request))

    async def list(self, request: web.Request) -> web.StreamResponse:
        ids, more = page(list(reversed(self.batches)), after=request.query.get("after_id"),
                         before=request.query.get("before_id"),
                         limit=limit_param(request, 20, 1000))
        return json_response({
            "data": [message_batch(self.batches[i], _results_url(request, i)) for i in ids],
            "has_more": more, "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None})

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        b = self._find(request)
        if not b.cancel():
            raise BadRequest(f"Message Batch {b.id} has already ended and cannot be canceled.")
        return self._view(request, b)

    async def results(self, request: web.Request) -> web.StreamResponse:
        b = self._find(request)
        if b.status not in ENDED:
            raise BadRequest(f"Message Batch {b.id} has not finished processing; its results "
                             "are not available yet.")
        return web.Response(body=results(b), content_type="application/binary")


def _results_url(request: web.Request, batch_id: str) -> str:
    """Absolute, as Anthropic's is: the SDK fetches it as given."""
    return f"{request.scheme}://{request.host}{_ROOT}/{batch_id}/results"
