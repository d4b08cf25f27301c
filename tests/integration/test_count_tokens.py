"""`POST /v1/messages/count_tokens` (issue 18) with the official Anthropic SDK: forwarded
to the upstream for a Claude deployment (`tollway simulate`, whose count is what its
/v1/messages bills), counted locally otherwise; authenticated, limited to a key's
models, errors in Anthropic's shape naming the field."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.helpers.admin import create_key
from tests.helpers.clients import track
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle
from tollway.accounting.tokens import count_request
from tollway.wire.anthropic import parse_count_tokens_request

MASTER = "master-" + os.urandom(8).hex()
PATH = "/v1/messages/count_tokens"


@pytest.fixture(scope="module")
def gw(sim: SimHandle) -> Iterator[GatewayHandle]:
    claude = {"provider": "anthropic", "api_base": sim.anthropic_base, "api_key": "sim-key"}
    handle = start_gateway({"models": {
        "claude": {"deployments": [{**claude, "model": "claude-sonnet-4-5-20250929"}]},
        "anthropic/*": {"deployments": [{**claude, "model": "*"}]},
        "openai/*": {"deployments": [{"provider": "openai", "model": "*",
                                      "api_base": sim.openai_base, "api_key": "sim-key"}]},
        "house": {"deployments": [{"provider": "local", "model": "smollm2-135m"}]},
    }}, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


def client(gw: GatewayHandle, key: str = MASTER) -> anthropic.AsyncAnthropic:
    return track(anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=0))


PROMPT: dict[str, Any] = {
    "system": "You are terse.",
    "messages": [{"role": "user", "content": "What is the weather in Paris today?"},
                 {"role": "assistant", "content": "Let me look."},
                 {"role": "user", "content": [{"type": "text", "text": "Please hurry."}]}],
    "tools": [{"name": "get_weather", "description": "The weather in a city.",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]}}],
}


def local_count(model: str) -> int:
    req = parse_count_tokens_request(json.dumps({"model": model, **PROMPT}).encode())
    return count_request(req, model)


async def test_a_claude_deployment_asks_the_upstream_which_counts_what_it_bills(
        gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(gw)
    raw = await c.messages.with_raw_response.count_tokens(model="claude", **PROMPT)
    counted = await raw.parse()
    assert raw.headers["x-tollway-counted-by"] == "upstream"
    assert raw.headers["x-tollway-provider"] == "anthropic"
    sent = fresh_sim.stats()["recent_requests"][-1]
    assert sent["endpoint"] == PATH and sent["headers"]["anthropic-version"]
    assert sent["body"]["model"] == "claude-sonnet-4-5-20250929"
    assert "max_tokens" not in sent["body"] and sent["body"]["tools"][0]["name"] == "get_weather"
    # The count is what the same prompt is billed for.
    msg = await c.messages.create(model="claude", max_tokens=8, **PROMPT)
    assert counted.input_tokens == msg.usage.input_tokens > 0
    # By a wildcard-served name too.
    again = await c.messages.count_tokens(model="claude-sonnet-4-5-20250929", **PROMPT)
    assert again.input_tokens == counted.input_tokens
    assert fresh_sim.stats()["requests_by_endpoint"][PATH] == 2
    metrics = gw.metrics()
    assert 'tollway_count_tokens_requests_total{counted_by="upstream",' in metrics


@pytest.mark.parametrize(("model", "upstream"), [("house", "smollm2-135m"),
                                                 ("gpt-4o-mini-2024-07-18",
                                                  "gpt-4o-mini-2024-07-18")])
async def test_other_models_are_counted_here(gw: GatewayHandle, fresh_sim: SimHandle,
                                            model: str, upstream: str) -> None:
    raw = await client(gw).messages.with_raw_response.count_tokens(model=model, **PROMPT)
    counted = await raw.parse()
    assert raw.headers["x-tollway-counted-by"] == "local"
    assert counted.input_tokens == local_count(upstream) > 0
    assert fresh_sim.stats()["requests"] == 0  # nothing upstream


def post(gw: GatewayHandle, body: Any, key: str | None = MASTER,
         method: str = "POST") -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    if key is not None:
        headers["x-api-key"] = key
    req = urllib.request.Request(gw.url + PATH, data=data if method == "POST" else None,
                                 method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


OK = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("body", "status", "names"), [
    ({"messages": OK["messages"]}, 400, "model"),
    ({**OK, "max_tokens": 10}, 400, "max_tokens"),
    ({**OK, "stream": True}, 400, "stream"),
    ({**OK, "temperature": 0.5}, 400, "temperature"),
    ({"model": "claude"}, 400, "messages"),
    ({**OK, "messages": "hi"}, 400, "messages"),
    ({**OK, "messages": [{"role": "user", "content": [{"type": "image"}]}]}, 400,
     "messages.0.content.0"),
    ({**OK, "tools": [{"name": "f", "input_schema": {"type": 12}}]}, 400, "tools.0"),
    ({**OK, "model": 5}, 400, "model"),
    ({**OK, "model": "made-up-model"}, 404, "made-up-model"),
    (b"{not json", 400, "JSON"),
    (b"[]", 400, "object"),
])
def test_bad_input_is_a_4xx_in_anthropics_shape_naming_the_field(
        gw: GatewayHandle, fresh_sim: SimHandle, body: Any, status: int, names: str) -> None:
    got, reply = post(gw, body)
    assert got == status, reply
    assert reply["type"] == "error" and reply["error"]["type"], reply
    assert names in reply["error"]["message"], reply
    assert fresh_sim.stats()["requests"] == 0


def test_the_key_and_its_models_are_checked(gw: GatewayHandle) -> None:
    assert post(gw, OK, key=None)[0] == 401
    status, reply = post(gw, OK, key="tw-nope")
    assert status == 401 and reply["error"]["type"] == "authentication_error"
    only_openai, _ = create_key(gw.url, MASTER, models=["openai/*"])
    status, reply = post(gw, OK, key=only_openai)
    assert status == 403 and reply["error"]["type"] == "permission_error", reply
    status, reply = post(gw, {**OK, "model": "gpt-4o"}, key=only_openai)
    assert status == 200 and reply["input_tokens"] > 0
    status, reply = post(gw, OK, method="GET")
    assert status == 405 and reply["type"] == "error"


async def test_the_sdk_raises_anthropics_errors(gw: GatewayHandle) -> None:
    with pytest.raises(anthropic.NotFoundError):
        await client(gw).messages.count_tokens(model="made-up-model", **PROMPT)
    with pytest.raises(anthropic.AuthenticationError):
        await client(gw, "tw-nope").messages.count_tokens(model="claude", **PROMPT)


def test_the_simulator_counts_as_it_bills(fresh_sim: SimHandle) -> None:
    body = {"model": "claude-x", **PROMPT}
    counted = fresh_sim.request("POST", PATH, body)["input_tokens"]
    billed = fresh_sim.request("POST", "/v1/messages", {**body, "max_tokens": 4})
    assert counted == billed["usage"]["input_tokens"] > 0
    req = urllib.request.Request(fresh_sim.url + PATH, method="POST",
                                 data=json.dumps({**body, "max_tokens": 4}).encode(),
                                 headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as got:
        urllib.request.urlopen(req, timeout=10)
    err = json.loads(got.value.read())
    assert got.value.code == 400 and "max_tokens" in err["error"]["message"]
