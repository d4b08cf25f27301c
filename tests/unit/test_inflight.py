"""Billing a stream closed before its end (`accounting/inflight.py`): what was read,
what had arrived unread, and the allowance for what was still being generated."""

from __future__ import annotations

import math

import orjson

from tests.unit.fakes import stream
from tollway.accounting.inflight import generated
from tollway.types import Flight, ReplyStream, UpstreamDialect
from tollway.wire import sse

MODEL = "gpt-4o-mini"


def content(*deltas: str, finish: str | None = None) -> bytes:
    """OpenAI chunk events, one per delta."""
    return b"".join(sse.frame({"choices": [{"index": 0, "delta": {"content": d},
                                            "finish_reason": finish}]}) for d in deltas)


def closed(unread: bytes = b"", *, first: float = 0.5, at: float = 1.5,
           dialect: UpstreamDialect = "openai", max_output: int | None = 1000,
           queued: int = 0, read_bytes: int = 0, first_read: bytes = b"") -> ReplyStream:
    """A stream sent at 0, first event at `first`, closed at `at`."""
    s = stream([], MODEL)
    s.flight = Flight(sent=0.0, first=first, closed=at, unread=unread, dialect=dialect,
                      queued=queued, read_bytes=read_bytes, first_read=first_read)
    s.max_output = max_output
    return s


def billed(s: ReplyStream, read: int, stall: float = 0.0) -> int:
    """The estimate, billed `stall` seconds after the close."""
    assert s.flight is not None
    return generated(s, read, MODEL, (s.flight.closed or 0.0) + stall).output


def test_without_an_upstream_connection_what_was_read_is_what_was_generated() -> None:
    assert generated(stream([], MODEL), 7, MODEL, 9.0).output == 7


def test_a_stream_read_to_its_end_has_nothing_in_flight() -> None:
    s = closed()
    assert s.flight is not None
    s.flight.closed = None
    assert generated(s, 12, MODEL, 9.0).output == 12


def test_the_allowance_is_the_streams_pace_over_its_time_to_first_byte_plus_one() -> None:
    # 10 tokens in the second since the first event; 0.5 s to that first event: 5 + 1.
    assert billed(closed(), 10) == 10 + 5 + 1


def test_billing_late_widens_the_allowance_by_the_wait() -> None:
    assert billed(closed(), 10, stall=0.5) == 10 + 10 + 1  # pace 10/s x (0.5 + 0.5)


def test_bytes_left_in_the_os_buffer_count_at_the_streams_tokens_per_byte() -> None:
    # 10 tokens in 2,000 bytes read: 450 queued bytes are 2.25, so 3 tokens.
    assert billed(closed(queued=450, read_bytes=2000), 10) == 10 + 3 + 5 + 1


def test_unread_bytes_are_counted_and_a_cut_event_is_one_token() -> None:
    unread = content(" one", " two") + b'data: {"choices": [{"ind'
    assert billed(closed(unread), 10) == 10 + 2 + 1 + 5 + 1


def test_an_end_among_the_unread_bytes_leaves_nothing_in_flight() -> None:
    unread = content(" one") + content("", finish="stop")
    assert billed(closed(unread), 10) == 11


def test_the_providers_usage_among_the_unread_bytes_is_taken_as_it_is() -> None:
    usage = {"prompt_tokens": 30, "completion_tokens": 14, "total_tokens": 44}
    unread = content(" one") + sse.frame({"choices": [], "usage": usage})
    got = generated(closed(unread), 10, MODEL, 9.0)
    assert got.output == 14 and got.usage is not None and got.usage.prompt_tokens == 30


def test_anthropic_deltas_are_counted_in_their_own_format() -> None:
    delta = {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": " one two"}}
    unread = b"event: content_block_delta\ndata: " + orjson.dumps(delta) + b"\n\n"
    assert billed(closed(unread, dialect="anthropic"), 10) == 18


def test_never_past_the_requests_max_output_nor_below_what_arrived() -> None:
    assert billed(closed(max_output=12), 10) == 12
    assert billed(closed(content(" a", " b"), max_output=5), 10) == 12


def test_a_close_right_after_the_first_event_takes_the_pace_since_sending() -> None:
    s = closed(at=0.5)  # no time to see a pace of its own: 4 tokens in 0.5 s
    assert billed(s, 4) == 4 + 4 + 1


def test_a_backlog_in_the_first_read_does_not_pass_for_pace() -> None:
    # 8 of the 10 tokens came with the first read, after 0.5 s of not reading: the
    # pace since is 2/s, below the 10 in 1.5 s since sending, which is taken.
    s = closed(first_read=content(*[" w"] * 8))
    assert billed(s, 10) == 10 + math.ceil(10 / 1.5 * 0.5) + 1
