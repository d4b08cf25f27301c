"""Bad input gets a 4xx in OpenAI's error shape naming the problem — never a 500."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import MAX_BODY_BYTES
from tests.helpers.gateway import GatewayHandle

GOOD: dict[str, Any] = {"model": "sim", "messages": [{"role": "user", "content": "hi"}]}
JSON = {"Content-Type": "application/json"}


def with_(**kw: Any) -> bytes:
    return orjson.dumps({**GOOD, **kw})


def without(key: str) -> bytes:
    return orjson.dumps({k: v for k, v in GOOD.items() if k != key})


# (name, method, path, body, headers, status, fragment of the message)
CASES: list[tuple[str, str, str, bytes | None, dict[str, str], int, str]] = [
    ("malformed json", "POST", "/v1/chat/completions", b'{"model": "sim",', JSON, 400,
     "not valid JSON"),
    ("json array", "POST", "/v1/chat/completions", b"[]", JSON, 400, "must be a JSON object"),
    ("empty body", "POST", "/v1/chat/completions", b"", JSON, 400, "empty"),
    ("model wrong type", "POST", "/v1/chat/completions", with_(model=5), JSON, 400,
     "'model'"),
    ("messages wrong type", "POST", "/v1/chat/completions", with_(messages="hi"), JSON, 400,
     "'messages'"),
    ("content wrong type", "POST", "/v1/chat/completions",
     with_(messages=[{"role": "user", "content": 42}]), JSON, 400, "messages[0].content"),
    ("max_tokens wrong type", "POST", "/v1/chat/completions", with_(max_tokens="10"), JSON,
     400, "max_tokens"),
    ("stream wrong type", "POST", "/v1/chat/completions", with_(stream="yes"), JSON, 400,
     "stream"),
    ("missing messages", "POST", "/v1/chat/completions", without("messages"), JSON, 400,
     "Missing required parameter: 'messages'"),
    ("missing model", "POST", "/v1/chat/completions", without("model"), JSON, 400,
     "Missing required parameter: 'model'"),
    ("empty messages", "POST", "/v1/chat/completions", with_(messages=[]), JSON, 400,
     "at least one message"),
    ("unknown role", "POST", "/v1/chat/completions",
     with_(messages=[{"role": "wizard", "content": "x"}]), JSON, 400, "'wizard'"),
    ("message not an object", "POST", "/v1/chat/completions", with_(messages=["hi"]), JSON,
     400, "messages[0]"),
    ("unknown model", "POST", "/v1/chat/completions", with_(model="gpt-9000"), JSON, 404,
     "'gpt-9000' does not exist"),
    ("body over limit", "POST", "/v1/chat/completions",
     with_(messages=[{"role": "user", "content": "x" * (MAX_BODY_BYTES + 10)}]), JSON, 413,
     "limit"),
    ("wrong content type", "POST", "/v1/chat/completions", with_(),
     {"Content-Type": "text/plain"}, 415, "application/json"),
    ("form content type", "POST", "/v1/chat/completions", with_(),
     {"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
    ("n zero", "POST", "/v1/chat/completions", with_(n=0), JSON, 400, "'n' must be between"),
    ("n too large", "POST", "/v1/chat/completions", with_(n=1000), JSON, 400,
     "'n' must be between"),
    ("negative max_tokens", "POST", "/v1/chat/completions", with_(max_tokens=-1), JSON, 400,
     "max_tokens"),
    ("temperature out of range", "POST", "/v1/chat/completions", with_(temperature=9), JSON,
     400, "temperature"),
    ("invalid utf-8", "POST", "/v1/chat/completions", b'{"model": "\xff"}', JSON, 400,
     "not valid JSON"),
    ("wrong method", "GET", "/v1/chat/completions", None, {}, 405, "use POST"),
    ("unknown path", "GET", "/v1/nothing", None, {}, 404, "No route"),
    ("anthropic missing max_tokens", "POST", "/v1/messages", with_(), JSON, 400,
     "max_tokens"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_bad_input_matrix(gw: GatewayHandle, case: tuple[Any, ...]) -> None:
    _, method, path, body, headers, status, fragment = case
    async with aiohttp.ClientSession() as s, s.request(
            method, gw.url + path, data=body, headers=headers) as r:
        raw = await r.read()
        assert r.status == status, raw
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["x-request-id"]
        err = orjson.loads(raw)["error"]
        if path == "/v1/messages":
            assert set(err) >= {"type", "message"}
        else:
            assert set(err) == {"message", "type", "param", "code"}
        assert fragment in err["message"], err["message"]


async def test_gateway_survives_the_matrix(gw: GatewayHandle) -> None:
    """After all that, a good request still works (nothing got wedged)."""
    async with aiohttp.ClientSession() as s, s.post(
            f"{gw.base_url}/chat/completions", data=orjson.dumps(GOOD), headers=JSON) as r:
        assert r.status == 200
