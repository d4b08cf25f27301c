"""OpenAI's Batch API, for a Tollway batch's lines sent at the batch price: the lines as
one JSONL uploaded to `/files`, a batch made of it at `/batches`, polled until it ends,
its output and error files read back and told apart by `custom_id`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import orjson

from tollway.errors import UpstreamError
from tollway.providers import http
from tollway.providers.base import LineResult, error_from_status
from tollway.types import Deployment

ENDED = ("completed", "failed", "expired", "cancelled")


class NoBatchApi(UpstreamError):
    """The upstream has no batch API (a compatible server): run the lines one by one."""


async def _json(resp: aiohttp.ClientResponse, dep: Deployment, what: str) -> Any:
    data = await resp.read()
    if resp.status in (404, 405) and what == "upload":
        raise NoBatchApi(f"Upstream {http.where(dep)} has no batch API ({resp.status} on "
                         "/files).")
    if resp.status >= 400:
        raise error_from_status(resp.status, data, resp.headers, dep)
    return orjson.loads(data) if data else {}


async def run(transport: http.Transport, dep: Deployment, endpoint: str,
              lines: Sequence[tuple[str, bytes]], poll_s: float,
              url: Callable[[str], str], auth: dict[str, str]) -> dict[str, LineResult]:
    """Send `lines` (custom id, request body) to `endpoint` through the provider's batch
    API and wait for the answers, by custom id. `url`: a path under the API's base;
    `auth`: the deployment's headers."""
    session = transport.session()
    headers = {k: v for k, v in auth.items() if k.lower() != "content-type"}
    jsonl = b"".join(orjson.dumps({"custom_id": cid, "method": "POST", "url": endpoint})[:-1]
                     + b',"body":' + body + b"}\n" for cid, body in lines)
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", jsonl, filename="tollway-batch.jsonl",
                   content_type="application/jsonl")
    async with session.post(url("files"), data=form, headers=headers) as r:
        uploaded = await _json(r, dep, "upload")
    ask = orjson.dumps({"input_file_id": uploaded["id"], "endpoint": endpoint,
                        "completion_window": "24h"})
    async with session.post(url("batches"), data=ask,
                            headers={**headers, "Content-Type": "application/json"}) as r:
        batch = await _json(r, dep, "create")
    while batch.get("status") not in ENDED:
        await asyncio.sleep(poll_s)  # the provider's batch: nothing to await but its status
        async with session.get(url(f"batches/{batch['id']}"), headers=headers) as r:
            batch = await _json(r, dep, "poll")
    out: dict[str, LineResult] = {}
    for key in ("output_file_id", "error_file_id"):
        if batch.get(key):
            async with session.get(url(f"files/{batch[key]}/content"),
                                   headers=headers) as r:
                if r.status >= 400:
                    raise error_from_status(r.status, await r.read(), r.headers, dep)
                for raw in (await r.read()).splitlines():
                    if raw.strip():
                        line = orjson.loads(raw)
                        resp = line.get("response") or {}
                        out[str(line.get("custom_id"))] = LineResult(
                            resp.get("status_code"), resp.get("body") or line.get("error") or {})
    return out
