"""A native Response object's chat view, and billing a cut native stream's unread
bytes (`inflight`'s `responses` wire format)."""

from __future__ import annotations

import orjson

from tollway.accounting.inflight import _scan
from tollway.providers.openai_responses import chat_view


def test_a_response_object_as_a_chat_completion() -> None:
    body = chat_view({"id": "resp_1", "status": "completed", "model": "m", "output": [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}],
        "usage": {"input_tokens": 5, "output_tokens": 7,
                  "input_tokens_details": {"cached_tokens": 2},
                  "output_tokens_details": {"reasoning_tokens": 3}}}, "m")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Hi"
    assert choice["message"]["tool_calls"][0]["id"] == "c1"
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 3}
    cut = chat_view({"status": "incomplete", "output": [],
                     "incomplete_details": {"reason": "max_output_tokens"}}, "m")
    assert cut["choices"][0]["finish_reason"] == "length"


def test_unread_responses_events_are_counted_or_their_usage_taken() -> None:
    def ev(**e: object) -> bytes:
        return b"event: x\ndata: " + orjson.dumps(e) + b"\n\n"

    deltas = ev(type="response.output_text.delta", delta="hello there") * 2
    tokens, ended, usage = _scan(deltas, "responses", "gpt-4o")
    assert tokens >= 2 and not ended and usage is None
    done = ev(type="response.completed", response={"usage": {
        "input_tokens": 3, "output_tokens": 9}})
    _, ended, usage = _scan(deltas + done, "responses", "gpt-4o")
    assert ended and usage is not None and usage.completion_tokens == 9
