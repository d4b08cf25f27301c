"""The batch APIs' shapes: OpenAI's Files and Batch objects, its input and result JSONL
lines; Anthropic's Message Batch, its requests and its results JSONL.

A line's answer is embedded as the bytes the interactive endpoint answered
(`orjson.Fragment`), so a batch result is byte for byte an interactive reply.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from tollway.simulate.batches import (
    ENDED,
    Batch,
    BatchLine,
    FileBatch,
    LineError,
    Outcome,
    StoredFile,
    new_id,
)
from tollway.simulate.state import ModelUsage
from tollway.simulate.wire import BadRequest

Json = dict[str, Any]

# -- OpenAI ----------------------------------------------------------------------------

_EXPIRED = {"code": "batch_expired",
            "message": "This request could not be executed before the completion window "
                       "expired."}


def parse_input(data: bytes, endpoint: str) -> tuple[list[BatchLine], list[LineError]]:
    """An input file's request lines, and what is wrong with them (any fault fails the
    whole batch, as OpenAI's validation does)."""
    lines: list[BatchLine] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    for n, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError:
            row = None
        fault = _line_fault(row, endpoint, seen)
        if fault is not None:
            code, message, param = fault
            errors.append(LineError(code, message, n, param))
            continue
        seen.add(row["custom_id"])
        lines.append(BatchLine(row["custom_id"], row["body"]))
    if not lines and not errors:
        errors.append(LineError("empty_file", "The batch input file is empty."))
    return lines, errors


def _line_fault(row: Any, endpoint: str,
                seen: set[str]) -> tuple[str, str, str | None] | None:
    if not isinstance(row, dict):
        return "invalid_json_line", "This line is not parseable as a valid JSON object.", None
    custom_id = row.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return ("missing_required_parameter", "Missing required parameter: 'custom_id'.",
                "custom_id")
    if custom_id in seen:
        return ("duplicate_custom_id", f"The custom_id '{custom_id}' is not unique within "
                "the batch.", "custom_id")
    if row.get("method") != "POST":
        return "invalid_value", "Invalid value for 'method': only POST is supported.", "method"
    if row.get("url") != endpoint:
        return ("invalid_url", f"The URL of this request does not match the batch's "
                f"endpoint, {endpoint}.", "url")
    if not isinstance(row.get("body"), dict):
        return "missing_required_parameter", "Missing required parameter: 'body'.", "body"
    return None


def file_object(f: StoredFile) -> Json:
    return {"id": f.id, "object": "file", "bytes": len(f.data), "created_at": f.created_at,
            "filename": f.filename, "purpose": f.purpose, "status": "processed",
            "status_details": None, "expires_at": None}


def batch_object(fb: FileBatch) -> Json:
    b = fb.batch
    at = {status: int(t) for status, t in b.at.items()}
    model = b.lines[0].body.get("model") if b.lines else None
    return {
        "id": b.id, "object": "batch", "endpoint": b.endpoint,
        "errors": ({"object": "list", "data": [_error(e) for e in b.errors]}
                   if b.errors else None),
        "input_file_id": fb.input_file_id, "completion_window": "24h", "status": b.status,
        "output_file_id": fb.output_file_id, "error_file_id": fb.error_file_id,
        "created_at": int(b.created_at), "in_progress_at": at.get("in_progress"),
        "expires_at": int(b.expires_at), "finalizing_at": at.get("finalizing"),
        "completed_at": at.get("completed"), "failed_at": at.get("failed"),
        "expired_at": at.get("expired"), "cancelling_at": at.get("cancelling"),
        "cancelled_at": at.get("cancelled"), "request_counts": _counts(b),
        "metadata": fb.metadata, "model": model if isinstance(model, str) else None,
        "usage": _usage(b),
    }


def _error(e: LineError) -> Json:
    return {"code": e.code, "message": e.message, "param": e.param, "line": e.line}


def _counts(b: Batch) -> Json:
    """OpenAI counts lines as they are answered; expired ones count as failed."""
    if b.errors or b.status == "validating":
        return {"total": 0, "completed": 0, "failed": 0}
    o = b.outcomes()
    return {"total": len(b.lines), "completed": o["succeeded"],
            "failed": o["errored"] + o["expired"]}


def _usage(b: Batch) -> Json:
    total = ModelUsage()
    for line in b.lines:
        if line.result is not None and line.result.usage is not None:
            total.add(line.result.usage)
    return {"input_tokens": total.prompt_tokens,
            "input_tokens_details": {"cached_tokens": total.cached_tokens},
            "output_tokens": total.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": total.prompt_tokens + total.completion_tokens}


def result_files(b: Batch) -> tuple[bytes, bytes]:
    """The output file (answered lines) and the error file (lines answered with an
    error, and expired ones), each in input order; a cancelled line is in neither."""
    out: list[bytes] = []
    errors: list[bytes] = []
    for i, line in enumerate(b.lines):
        outcome = b.outcome(line)
        if outcome in (None, "canceled"):
            continue
        row: Json = {"id": new_id("batch_req_", b.id, i), "custom_id": line.custom_id,
                     "response": None, "error": None}
        if line.result is not None:
            row["response"] = {"status_code": line.result.status,
                               "request_id": line.result.request_id,
                               "body": orjson.Fragment(line.result.body)}
        else:
            row["error"] = _EXPIRED
        (out if outcome == "succeeded" else errors).append(orjson.dumps(row) + b"\n")
    return b"".join(out), b"".join(errors)


# -- Anthropic -------------------------------------------------------------------------

_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_MAX_REQUESTS = 100_000


def parse_requests(body: Any) -> list[BatchLine]:
    """The batch's requests. Their params are checked only as each is answered (an
    invalid one is an errored result), as Anthropic does."""
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list):
        raise BadRequest("requests: Field required")
    if not 1 <= len(requests) <= _MAX_REQUESTS:
        raise BadRequest(f"requests: List should have between 1 and {_MAX_REQUESTS} items")
    lines: list[BatchLine] = []
    seen: set[str] = set()
    for i, r in enumerate(requests):
        custom_id = r.get("custom_id") if isinstance(r, dict) else None
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise BadRequest(f"requests.{i}.custom_id: String should match pattern "
                             f"'^{_CUSTOM_ID.pattern}$'")
        if custom_id in seen:
            raise BadRequest(f"requests.{i}.custom_id: Duplicate custom_id '{custom_id}'; "
                             "each request in a batch needs its own.")
        if not isinstance(r.get("params"), dict):
            raise BadRequest(f"requests.{i}.params: Field required")
        seen.add(custom_id)
        lines.append(BatchLine(custom_id, r["params"]))
    return lines


def message_batch(b: Batch, results_url: str) -> Json:
    ended = b.status in ENDED
    return {
        "id": b.id, "type": "message_batch",
        "processing_status": ("ended" if ended else
                              "canceling" if b.status == "cancelling" else "in_progress"),
        "request_counts": _request_counts(b, ended),
        "ended_at": _rfc3339(b.ended_at), "created_at": _rfc3339(b.created_at),
        "expires_at": _rfc3339(b.expires_at), "archived_at": None,
        "cancel_initiated_at": _rfc3339(b.at.get("cancelling")),
        "results_url": results_url if ended else None,
    }


def _request_counts(b: Batch, ended: bool) -> Json:
    """Anthropic moves requests out of `processing` only once the batch has ended."""
    if not ended:
        return {"processing": len(b.lines), "succeeded": 0, "errored": 0, "canceled": 0,
                "expired": 0}
    o = b.outcomes()
    return {"processing": 0, "succeeded": o["succeeded"], "errored": o["errored"],
            "canceled": o["canceled"], "expired": o["expired"]}


def results(b: Batch) -> bytes:
    """The results JSONL, in input order (Anthropic promises no order)."""
    return b"".join(orjson.dumps({"custom_id": line.custom_id,
                                  "result": _result(b.outcome(line), line)}) + b"\n"
                    for line in b.lines)


def _result(outcome: Outcome | None, line: BatchLine) -> Json:
    if outcome == "succeeded" and line.result is not None:
        return {"type": "succeeded", "message": orjson.Fragment(line.result.body)}
    if outcome == "errored" and line.result is not None:
        return {"type": "errored", "error": orjson.Fragment(line.result.body)}
    return {"type": outcome}


def _rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")
