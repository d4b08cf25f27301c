"""The stream fast path's event handling: split, usage, errors, end."""

import orjson
import pytest

from tollway.errors import UpstreamError
from tollway.providers.openai import _look
from tollway.types import Deployment, ReplyStream, Usage
from tollway.wire.sse import split_events

DEP = Deployment(provider="openai", model="m")


def ev(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


CONTENT = {"choices": [{"index": 0, "delta": {"content": 'say "usage":{ x'}}], "usage": None}
USAGE = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                  "total_tokens": 5}}


def new_stream(emit_usage: bool) -> ReplyStream:
    async def nothing():  # type: ignore[no-untyped-def]
        yield b""
    return ReplyStream(frames=nothing(), model="m", emit_usage=emit_usage)


def test_split_events_keeps_the_incomplete_tail() -> None:
    events, rest = split_events(b"event: a\ndata: 1\n\ndata: x\ndata: y\n\n: ping\n\ndata: part")
    assert events == [(b"a", b"1"), (b"", b"x\ny")]
    assert rest == b"data: part"


def test_split_events_accepts_crlf() -> None:
    events, rest = split_events(b"data: 1\r\n\r\ndata: 2\r\n\r\n")
    assert events == [(b"", b"1"), (b"", b"2")] and rest == b""


@pytest.mark.parametrize("emit", [True, False])
def test_usage_is_recorded_and_forwarded_only_when_asked(emit: bool) -> None:
    out = new_stream(emit)
    blob, done = _look(ev(CONTENT) + ev(USAGE) + b"data: [DONE]\n\n", out, DEP)
    assert done
    assert out.usage == Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    assert blob == ev(CONTENT) + (ev(USAGE) if emit else b"")


def test_quoted_usage_inside_text_is_not_mistaken_for_usage() -> None:
    out = new_stream(False)
    blob, done = _look(ev(CONTENT), out, DEP)
    assert blob == ev(CONTENT) and not done and out.usage is None


def test_usage_riding_on_a_content_chunk_is_stripped_for_the_client() -> None:
    both = {"choices": [{"index": 0, "delta": {"content": "hi"}}], **{"usage": USAGE["usage"]}}
    out = new_stream(False)
    blob, _ = _look(ev(both), out, DEP)
    assert orjson.loads(blob[6:]) == {"choices": both["choices"]}
    assert out.usage is not None and out.usage.total_tokens == 5


def test_error_event_raises() -> None:
    with pytest.raises(UpstreamError, match="failed mid-stream: overloaded"):
        _look(ev({"error": {"message": "overloaded"}}), new_stream(False), DEP)
