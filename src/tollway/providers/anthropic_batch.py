"""Anthropic's Message Batches API, for a Tollway batch's lines sent at the batch price:
the lines as one `POST /v1/messages/batches` (`requests`: custom id and params), polled
until its processing ends, its results JSONL read back by `custom_id`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson

from tollway.errors import UpstreamError
from tollway.providers import http
from tollway.providers.base import LineResult, error_from_status
from tollway.types import Deployment

# An errored line's error type, as the status the same error has interactively.
_STATUS = {"invalid_request_error": 400, "authentication_error": 401,
           "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
           "rate_limit_error": 429, "api_error": 500, "overloaded_error": 529}


async def _json(resp: Any, dep: Deployment) -> Any:
    data = await resp.read()
    if resp.status >= 400:
        raise error_from_status(resp.status, data, resp.headers, dep)
    return orjson.loads(data) if data else {}


async def run(transport: http.Transport, dep: Deployment, url: str, headers: dict[str, str],
              lines: Sequence[tuple[str, bytes]], poll_s: float) -> dict[str, LineResult]:
    """Send `lines` (custom id, /v1/messages body) as one message batch at `url`
    (…/v1/messages/batches) and wait for the answers, by custom id."""
    session = transport.session()
    body = (b'{"requests":[' + b",".join(
        b'{"custom_id":' + orjson.dumps(cid) + b',"params":' + params + b"}"
        for cid, params in lines) + b"]}")
    async with session.post(url, data=body, headers=headers) as r:
        batch = await _json(r, dep)
    while batch.get("processing_status") != "ended":
        await asyncio.sleep(poll_s)  # the provider's batch: nothing to await but its status
        async with session.get(f"{url}/{batch['id']}", headers=headers) as r:
            batch = await _json(r, dep)
    results_url = batch.get("results_url")
    if not results_url:
        raise UpstreamError(f"Upstream {http.where(dep)} ended a message batch without "
                            "results.")
    out: dict[str, LineResult] = {}
    async with session.get(results_url, headers=headers) as r:
        if r.status >= 400:
            raise error_from_status(r.status, await r.read(), r.headers, dep)
        for raw in (await r.read()).splitlines():
            if not raw.strip():
                continue
            line = orjson.loads(raw)
            result = line.get("result") or {}
            kind = result.get("type")
            if kind == "succeeded":
                found = LineResult(200, result.get("message") or {})
            elif kind == "errored":
                err = result.get("error") or {}
                inner = err.get("error") or err
                found = LineResult(_STATUS.get(str(inner.get("type")), 500), err)
            else:  # canceled, expired: never answered
                found = LineResult(None, {"message": f"the message batch's request {kind}"})
            out[str(line.get("custom_id"))] = found
    return out
