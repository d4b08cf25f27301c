"""A batch input file is checked line by line: every bad line named by its number, the
file refused whole; good files give their requests in order."""

from __future__ import annotations

import orjson
import pytest

from tollway.wire import batch


def line(cid: str, model: str = "gpt-4o", url: str = "/v1/chat/completions") -> bytes:
    return orjson.dumps({"custom_id": cid, "method": "POST", "url": url,
                         "body": {"model": model, "messages": [{"role": "user",
                                                                "content": cid}]}})


def test_a_good_file_gives_its_requests_in_order() -> None:
    content = b"\n".join(line(f"r{i}") for i in range(3)) + b"\n"
    got = batch.parse(content)
    assert [(g.index, g.custom_id, g.model) for g in got] == [
        (0, "r0", "gpt-4o"), (1, "r1", "gpt-4o"), (2, "r2", "gpt-4o")]
    assert orjson.loads(got[1].body)["messages"][0]["content"] == "r1"


@pytest.mark.parametrize(("bad", "says"), [
    (b"{not json", "line 2: not JSON"),
    (b"[1, 2]", "line 2: not a JSON object"),
    (line("r0"), "line 2: custom_id 'r0' is used by an earlier line"),
    (line("r1", url="/v1/completions"), "line 2: url '/v1/completions' is not one of"),
    (orjson.dumps({"custom_id": "x", "method": "GET", "url": "/v1/embeddings", "body": {}}),
     "line 2: method must be \"POST\""),
    (orjson.dumps({"custom_id": "x", "method": "POST", "url": "/v1/embeddings",
                   "body": {"input": "hi"}}), "line 2: body.model must name a model"),
    (orjson.dumps({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "m", "stream": True}}), "line 2: a batch line cannot"),
])
def test_a_bad_line_is_named(bad: bytes, says: str) -> None:
    with pytest.raises(batch.BadFile) as e:
        batch.parse(line("r0") + b"\n" + bad + b"\n" + line("r2"))
    assert says in str(e.value)
    assert [x.line for x in e.value.errors] == [2]


def test_every_bad_line_is_counted_and_the_first_ones_named() -> None:
    content = b"\n".join([b"x"] * 8)
    with pytest.raises(batch.BadFile) as e:
        batch.parse(content)
    assert len(e.value.errors) == 8
    assert str(e.value).startswith("line 1: not JSON")
    assert str(e.value).endswith("(and 3 more lines)")


def test_limits_on_a_line_and_on_the_file() -> None:
    with pytest.raises(batch.BadFile, match=r"line 1: [\d,]+ bytes, over the 100-byte limit"):
        batch.parse(line("r" * 200), max_line_bytes=100)
    with pytest.raises(batch.BadFile, match="line 3: 3 lines, over the limit of 2"):
        batch.parse(b"\n".join(line(f"r{i}") for i in range(3)), max_lines=2)
    with pytest.raises(batch.BadFile, match="line 1: the file is empty"):
        batch.parse(b"\n")


def test_result_lines_are_openai_shaped() -> None:
    out = orjson.loads(batch.result_line("id1", "c1", 200, "req", b'{"ok":true}'))
    assert out == {"id": "id1", "custom_id": "c1", "error": None,
                   "response": {"status_code": 200, "request_id": "req", "body": {"ok": True}}}
    gone = orjson.loads(batch.failed_line("id2", "c2", "batch_expired", "late"))
    assert gone["response"] is None and gone["error"]["code"] == "batch_expired"
