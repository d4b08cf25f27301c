"""Anthropic's Message Batches on the wire: the `requests` list a batch is made from,
checked up front, and the results JSONL its lines are read back as.

A request is `{"custom_id": ..., "params": {...a Messages API request...}}`. What is
wrong with the list is said naming the request's index (`requests.3.custom_id`), as
Anthropic's API does; what only running can tell (an invalid message, an unknown
model, a budget) fails that request alone, as an `errored` result.

Results are converted from what the runner stores per line, OpenAI's batch result line
(`wire/batch.py`) around the body the Messages endpoint answered, so the two batch APIs
share one runner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import orjson

from tollway.errors import InvalidRequest

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_REQUESTS = 100_000  # Anthropic's limit per batch
MAX_BYTES = 256 * 1024 * 1024  # and for the whole request
# What a stored error (a line that never reached the request path) is, in Anthropic's
# error types.
_ERROR_TYPES = {"key_refused": "authentication_error"}


@dataclass(frozen=True, slots=True)
class Request:
    custom_id: str
    params: bytes  # the Messages API request, JSON


def parse_requests(body: bytes) -> list[Request]:
    """The batch's requests, in order; a 400 naming the first bad one's index."""
    try:
        ask = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"The body is not JSON: {e}.") from None
    requests = ask.get("requests") if isinstance(ask, dict) else None
    if not isinstance(requests, list) or not requests:
        raise InvalidRequest("requests: a non-empty list of {custom_id, params} is required.",
                             param="requests")
    if len(requests) > MAX_REQUESTS:
        raise InvalidRequest(f"requests: {len(requests):,} requests, over the limit of "
                             f"{MAX_REQUESTS:,} per batch.", param="requests")
    out: list[Request] = []
    seen: set[str] = set()
    for i, r in enumerate(requests):
        field, problem = _problem(r, seen)
        if problem:
            raise InvalidRequest(f"requests.{i}{field}: {problem}", param=f"requests.{i}")
        seen.add(r["custom_id"])
        out.append(Request(r["custom_id"], orjson.dumps(r["params"])))
    return out


def _problem(r: Any, seen: set[str]) -> tuple[str, str | None]:
    """What is wrong with one request (its field, and what), or ("", None)."""
    if not isinstance(r, dict):
        return "", "each request must be an object {custom_id, params}"
    cid, params = r.get("custom_id"), r.get("params")
    if not isinstance(cid, str) or not CUSTOM_ID.fullmatch(cid):
        return ".custom_id", f"must match ^{CUSTOM_ID.pattern}$ (got {str(cid)[:80]!r})"
    if cid in seen:
        return ".custom_id", f"{cid!r} is used by an earlier request; each must be unique"
    if not isinstance(params, dict):
        return ".params", "must be an object (a Messages API request)"
    model = params.get("model")
    if not isinstance(model, str) or not model:
        return ".params.model", "must name a model"
    if params.get("stream"):
        return ".params.stream", "a batch request cannot stream (drop stream)"
    return "", None


class _Response(msgspec.Struct):
    status_code: int
    body: msgspec.Raw  # the Messages endpoint's answer or error, as it was written


class _Stored(msgspec.Struct):
    """A line's result as the runner stores it (OpenAI's batch result line)."""

    response: _Response | None = None
    error: dict[str, str] | None = None  # it never reached the request path


def result_line(custom_id: str, stored: bytes | None,
                unrun: Literal["canceled", "expired"]) -> bytes:
    """One line of the results JSONL; `unrun`: what a line that never ran became."""
    result: dict[str, Any]
    got = None if stored is None else msgspec.json.decode(stored, type=_Stored)
    if got is None:
        result = {"type": unrun}
    elif got.response is not None:
        body = orjson.Fragment(bytes(got.response.body))
        result = ({"type": "succeeded", "message": body} if got.response.status_code < 400
                  else {"type": "errored", "error": body})  # already Anthropic's error
    else:
        err = got.error or {}
        result = {"type": "errored", "error": {"type": "error", "error": {
            "type": _ERROR_TYPES.get(err.get("code", ""), "api_error"),
            "message": err.get("message", "")}}}
    return orjson.dumps({"custom_id": custom_id, "result": result}) + b"\n"


def rfc3339(t: float | None) -> str | None:
    """A time as Anthropic writes it: 2024-08-20T18:37:24.100435Z."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")
