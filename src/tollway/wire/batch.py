"""OpenAI's batch files: the input JSONL a batch is made from, checked line by line, and
the output and error JSONL its results are written as.

An input line is `{"custom_id": ..., "method": "POST", "url": "/v1/chat/completions",
"body": {...}}`. What is wrong with a line is said with its line number (1-based, as
an editor shows it) so a person can find it; a file with any such line is refused
whole at upload, before a batch is made of it. What only running can tell (an unknown
model, a guard, a budget) fails that line alone, in the error file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings")
MAX_LINES = 50_000  # OpenAI's limit per batch
MAX_LINE_BYTES = 1_000_000
SHOWN_ERRORS = 5  # a message names the first few bad lines, and how many there are


@dataclass(frozen=True, slots=True)
class InputLine:
    index: int  # 0-based, in file order
    custom_id: str
    url: str
    body: bytes  # the request, as JSON
    model: str


@dataclass(frozen=True, slots=True)
class LineError:
    line: int  # 1-based
    message: str


class BadFile(ValueError):
    """The file cannot be a batch's input: what is wrong, naming the lines."""

    def __init__(self, errors: Sequence[LineError], total: int | None = None) -> None:
        shown = "; ".join(f"line {e.line}: {e.message}" for e in errors[:SHOWN_ERRORS])
        more = len(errors) - SHOWN_ERRORS
        super().__init__(shown + (f" (and {more} more lines)" if more > 0 else ""))
        self.errors = list(errors)


def _line(n: int, raw: bytes, seen: set[str], max_line_bytes: int
          ) -> tuple[InputLine | None, str | None]:
    if len(raw) > max_line_bytes:
        return None, f"{len(raw):,} bytes, over the {max_line_bytes:,}-byte limit for a line"
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return None, f"not JSON ({e})"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    cid, url, method, body = (obj.get("custom_id"), obj.get("url"), obj.get("method"),
                              obj.get("body"))
    if not isinstance(cid, str) or not cid:
        return None, "custom_id must be a non-empty string"
    if cid in seen:
        return None, f"custom_id {cid!r} is used by an earlier line; each must be unique"
    if method != "POST":
        return None, f"method must be \"POST\", not {method!r}"
    if url not in ENDPOINTS:
        return None, f"url {url!r} is not one of {', '.join(ENDPOINTS)}"
    if not isinstance(body, dict):
        return None, "body must be a JSON object (the request)"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return None, "body.model must name a model"
    if body.get("stream"):
        return None, "a batch line cannot stream (drop body.stream)"
    seen.add(cid)
    return InputLine(n - 1, cid, url, orjson.dumps(body), model), None


def parse(content: bytes, max_line_bytes: int = MAX_LINE_BYTES,
          max_lines: int = MAX_LINES) -> list[InputLine]:
    """Every request of a batch input file, in order; raises BadFile naming the lines
    that are wrong (all of them, not just the first)."""
    raws = content.split(b"\n")
    while raws and not raws[-1].strip():
        raws.pop()  # the newline that ends the last line
    if not raws:
        raise BadFile([LineError(1, "the file is empty: one JSON request per line")])
    if len(raws) > max_lines:
        raise BadFile([LineError(max_lines + 1,
                                 f"{len(raws):,} lines, over the limit of {max_lines:,}")])
    lines: list[InputLine] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    for n, raw in enumerate(raws, 1):
        line, error = _line(n, raw.rstrip(b"\r"), seen, max_line_bytes)
        if error is not None:
            errors.append(LineError(n, error))
        elif line is not None:
            lines.append(line)
    if errors:
        raise BadFile(errors)
    return lines


def result_line(line_id: str, custom_id: str, status: int, request_id: str,
                body: bytes) -> bytes:
    """One line of the output (2xx) or error file, as OpenAI writes it: the response
    the request would have had."""
    return (b'{"id":' + orjson.dumps(line_id) + b',"custom_id":' + orjson.dumps(custom_id)
            + b',"response":{"status_code":' + str(status).encode() + b',"request_id":'
            + orjson.dumps(request_id) + b',"body":' + body + b'},"error":null}')


def failed_line(line_id: str, custom_id: str, code: str, message: str) -> bytes:
    """A line that never ran (the batch expired or was cancelled first)."""
    return orjson.dumps({"id": line_id, "custom_id": custom_id, "response": None,
                         "error": {"code": code, "message": message}})
