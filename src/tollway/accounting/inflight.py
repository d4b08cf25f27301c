"""What a provider generated for a stream we closed before its end (the client left),
when it never sent its usage: what we read, plus what was in flight.

A provider bills every token it generated until it learns the connection is closed,
and those after the last one we read never reach our count. The estimate errs high:

    output = read + unread + queued + ceil(pace x (ttfb + stall)) + 1,
             at most the request's max output (never less than what arrived)

- read: the output tokens in the events we read (counted);
- unread: those in the bytes the HTTP client had received but we had not read when
  we closed (drained and counted; the provider's usage among them is taken as is);
- queued: the bytes still in the OS's receive buffer, at the stream's own tokens per
  byte so far, rounded up;
- pace x (ttfb + stall): what the provider could generate before the close reached
  it and it stopped. pace is the stream's output per second after its first read,
  or since the request went out if that is higher (the first read may carry tokens
  that piled up before we read; a close right after it shows no pace of its own).
  ttfb, the stream's time from sending to its first event, is a trip through this
  provider's whole path and back as it is right now (network, load balancers, its
  queue, its busy event loops — and the prefill, so it errs high); a close travels
  the same path before generation stops. A kernel's round-trip time alone falls
  short: a busy provider notices a closed connection well after the packet arrives.
  stall, the time from deciding to close to billing, covers our own event loop
  shutting the socket late;
- 1: the token being generated as the close arrived, or an event cut in two.

Tokens a provider generates without streaming them (hidden reasoning) cannot be seen
and are not in this estimate. With no upstream connection in between (the local
model stops at the next token), what was read is what was generated.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from tollway.accounting.meter import output_tokens_of
from tollway.accounting.tokens import count_text
from tollway.types import Flight, ReplyStream, Usage
from tollway.wire.sse import split_events

MIN_SECONDS = 0.001


class Generated:
    """The estimate: output tokens, or the provider's own usage if it was among the
    unread bytes."""

    __slots__ = ("output", "usage")

    def __init__(self, output: int, usage: Usage | None = None) -> None:
        self.output, self.usage = output, usage


def generated(stream: ReplyStream, read: int, model: str, now: float) -> Generated:
    """`read`: output tokens in what we read of `stream`; `now`: monotonic, the close
    when the stream does not know it."""
    f = stream.flight
    if f is None:
        return Generated(read)
    unread, ended, usage = _scan(f.unread, f.dialect, model)
    if usage is not None:
        return Generated(usage.completion_tokens, usage)
    if ended or (f.closed is None and not f.unread):
        return Generated(read + unread)  # generation was over before we closed
    closed = f.closed if f.closed is not None else now
    queued = math.ceil(f.queued * read / f.read_bytes) if f.queued and f.read_bytes else 0
    ahead = math.ceil(pace(f, read, closed, model) * (max(0.0, f.first - f.sent)
                                                      + max(0.0, now - closed))) + 1
    total = read + unread + queued + ahead
    if stream.max_output is not None:
        total = min(total, max(stream.max_output, read + unread))
    return Generated(total)


def pace(f: Flight, read: int, closed: float, model: str) -> float:
    """Output tokens per second: since the first read (which may carry a backlog that
    piled up while we were not reading yet), or on average since the request went
    out, whichever is higher."""
    since_sent = read / max(closed - f.sent, MIN_SECONDS)
    lifetime = closed - f.first
    if lifetime < MIN_SECONDS:  # too short to tell a pace
        return since_sent
    later = read - _scan(f.first_read, f.dialect, model)[0]
    return max(since_sent, later / lifetime)


def _scan(raw: bytes, dialect: str, model: str) -> tuple[int, bool, Usage | None]:
    """Output tokens in a provider's raw stream bytes, whether the generation ended
    there, and the provider's usage if they hold it (OpenAI's usage event)."""
    if not raw:
        return 0, False, None
    events, rest = split_events(raw)
    tokens, ended = (1 if rest.strip() else 0), False
    for _, data in events:
        if data == b"[DONE]":
            ended = True
            continue
        try:
            event: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            tokens += 1  # cut mid-event: count it as one token
            continue
        if not isinstance(event, dict):
            continue
        if dialect == "openai":
            if event.get("usage"):
                return 0, True, Usage.from_openai(event["usage"])
            tokens += output_tokens_of(data, model)
            ended = ended or any(c.get("finish_reason") for c in event.get("choices") or ())
        elif dialect == "responses":
            kind = event.get("type")
            if kind in ("response.completed", "response.incomplete"):
                usage = Usage.from_responses((event.get("response") or {}).get("usage"))
                if usage is not None:
                    return 0, True, usage
                ended = True
            tokens += _responses_output(event, model)
        else:
            tokens += _anthropic_output(event, model)
            ended = ended or event.get("type") in ("message_delta", "message_stop")
    return tokens, ended, None


def _responses_output(event: dict[str, Any], model: str) -> int:
    """Output tokens in one Responses API event (text, refusal, arguments, reasoning
    summaries: what streams)."""
    kind = event.get("type")
    if not isinstance(kind, str) or not kind.endswith(".delta"):
        return 0
    text = event.get("delta")
    return count_text(text, model) if isinstance(text, str) and text else 0


def _anthropic_output(event: dict[str, Any], model: str) -> int:
    delta = event.get("delta") if event.get("type") == "content_block_delta" else None
    if not isinstance(delta, dict):
        return 0
    text = delta.get("text") or delta.get("partial_json") or delta.get("thinking") or ""
    return count_text(text, model) if isinstance(text, str) and text else 0
