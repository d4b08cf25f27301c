"""Input is checked before anything is held or sent (issue 17, items 4-7 and 11): each
case below was once forwarded, stored or answered 500; now it is a 400 naming the
parameter, in the caller's dialect, and the upstream (`tollway simulate`) never sees it.
Valid requests the SDKs send still pass."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import anthropic
import openai
import pytest

from tests.conftest import gateway_config
from tests.helpers.admin import call, create_key
from tests.helpers.clients import openai_client, track
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.raw import Reply, request
from tests.helpers.sim import SimHandle

MASTER = "master-" + os.urandom(8).hex()
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def igw(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway(gateway_config(sim.url), env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def send(gw: GatewayHandle, method: str, path: str, body: Any = None) -> Reply:
    return request(gw.url, method, path, body, {"authorization": f"Bearer {MASTER}"})


def post(gw: GatewayHandle, path: str, body: Any) -> Reply:
    return send(gw, "POST", path, body)


def openai_error(r: Reply, status: int = 400) -> dict[str, Any]:
    assert r.status == status, r.body
    assert r.headers["content-type"].startswith("application/json")
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


# --- item 4: the admin API validates every field, and stores only what it can read ----

OUT_OF_RANGE: list[tuple[dict[str, Any] | bytes, str]] = [
    ({"rpm": 99999999999999999999999}, "rpm"),
    ({"tpm": 2**63}, "tpm"),
    ({"rpm": 0}, "rpm"),
    ({"budgets": [{"tokens": 10**20, "period": "day"}]}, "budgets[0].tokens"),
    (b'{"budgets": [{"usd": 1e400}]}', "budgets[0].usd"),  # past a double
    ({"expires_in_seconds": 1e308}, "expires_in_seconds"),
    ({"name": "n" * 1000}, "name"),
    ({"team": "t" * 1000}, "team"),
    ({"features": ["f"] * 101}, "features"),
    ({"guards": {"injection_threshold": 7}}, "guards.injection_threshold"),
    ({"disabled": "yes"}, "disabled"),
]


@pytest.mark.parametrize(("body", "param"), OUT_OF_RANGE, ids=[p for _, p in OUT_OF_RANGE])
def test_an_out_of_range_admin_field_is_a_400_and_stores_nothing(
        igw: GatewayHandle, body: dict[str, Any] | bytes, param: str) -> None:
    before = call(igw.url, MASTER, "GET", "/admin/keys")
    r = post(igw, "/admin/keys", body)
    err = openai_error(r)
    assert err["param"] == param and err["message"].startswith(param), err
    after = call(igw.url, MASTER, "GET", "/admin/keys")
    assert before[0] == after[0] == 200
    assert len(after[1]["data"]) == len(before[1]["data"])  # nothing was stored


def test_keys_stay_listable_after_refused_changes(igw: GatewayHandle) -> None:
    _, rec = create_key(igw.url, MASTER, name="kept", rpm=10)
    path = f"/admin/keys/{rec['id']}"
    for change, param in (({"rpm": 2**64}, "rpm"), ({"expires_at": 1e300}, "expires_at")):
        r = send(igw, "PATCH", path, change)
        assert openai_error(r)["param"] == param
    r = post(igw, path + "/rotate", {"grace_seconds": 1e308})
    assert openai_error(r)["param"] == "grace_seconds"
    status, got = call(igw.url, MASTER, "GET", path)
    assert status == 200 and got["rpm"] == 10 and got["replaced_by"] is None
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env.update(TOLLWAY_URL=igw.url, TOLLWAY_MASTER_KEY=MASTER)
    listed = subprocess.run([sys.executable, "-m", "tollway.cli", "keys", "list"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert listed.returncode == 0 and rec["id"] in listed.stdout, listed.stderr


@pytest.mark.parametrize("after", ["nan|x", "inf|row_1", "x", "1e999|x", "12"])
def test_a_ledger_cursor_that_is_not_a_time_is_a_400(igw: GatewayHandle, after: str) -> None:
    r = send(igw, "GET", f"/admin/ledger?after={quote(after)}")
    assert openai_error(r)["param"] == "after"


# --- items 5 and 6: nesting bounded, schemas compiled, before anything is sent ----------

async def test_a_tool_schema_400_levels_deep_is_a_400(
        igw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = openai_client(igw.base_url, MASTER)
    with pytest.raises(openai.BadRequestError) as e:
        await c.chat.completions.create(model="sim", messages=HI, tools=[  # type: ignore[arg-type]
            {"type": "function", "function": {"name": "f", "parameters": nested(400)}}])
    assert e.value.param is not None and e.value.param.startswith("tools[0].function.parameters")
    assert "nested more than 64 levels" in e.value.message
    claude = track(anthropic.AsyncAnthropic(base_url=igw.url, api_key=MASTER, max_retries=0))
    with pytest.raises(anthropic.BadRequestError) as ae:
        await claude.messages.create(model="sim", max_tokens=5, messages=HI,  # type: ignore[arg-type]
                                     tools=[{"name": "f", "input_schema": nested(400)}])
    assert "tools.0.input_schema" in ae.value.message
    assert fresh_sim.stats()["requests"] == 0


async def test_an_invalid_json_schema_is_a_400_before_any_upstream_call(
        igw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = openai_client(igw.base_url, MASTER)
    with pytest.raises(openai.BadRequestError) as e:
        await c.chat.completions.create(model="sim", messages=HI, response_format={  # type: ignore[arg-type]
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}})
    assert e.value.param == "response_format.json_schema.schema"
    assert "not a valid JSON schema" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        await c.chat.completions.create(model="sim", messages=HI, tools=[{
            "type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "required": "a"}}}])
    assert e.value.param == "tools[0].function.parameters"
    claude = track(anthropic.AsyncAnthropic(base_url=igw.url, api_key=MASTER, max_retries=0))
    with pytest.raises(anthropic.BadRequestError) as ae:
        await claude.messages.create(model="sim", max_tokens=5, messages=HI,  # type: ignore[call-arg]
                                     output_config={"format": {"type": "json_schema",
                                                               "schema": {"type": 12}}})
    assert "output_config.format.schema" in ae.value.message
    assert fresh_sim.stats()["requests"] == 0


def test_a_schema_never_makes_the_gateway_fetch_a_url(
        igw: GatewayHandle, fresh_sim: SimHandle) -> None:
    """fastjsonschema would open any URL a `$ref` names (file:, http:) from the server."""
    for ref in ("file:///etc/passwd", f"{fresh_sim.url}/_sim/stats"):
        r = post(igw, "/v1/chat/completions", {"model": "sim", "messages": HI, "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"$ref": ref}}}]})
        err = openai_error(r)
        assert err["param"] == "tools[0].function.parameters"
        assert "points outside the schema" in err["message"]
    assert fresh_sim.stats()["requests"] == 0  # not even its stats page was fetched


# --- item 7: malformed fields the gateway can check are refused, not forwarded ---------

FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("user message without content", {"messages": [{"role": "user"}]},
     "messages[0].content"),
    ("system message with null content", {"messages": [{"role": "system", "content": None},
                                                       *HI]}, "messages[0].content"),
    ("assistant with neither content nor tool calls",
     {"messages": [*HI, {"role": "assistant"}, *HI]}, "messages[1].content"),
    ("empty content parts", {"messages": [{"role": "user", "content": []}]},
     "messages[0].content"),
    ("text part without text", {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages[0].content[0].text"),
    ("image_url: 5", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": 5}]}]}, "messages[0].content[0].image_url"),
    ("image without url", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {}}]}]}, "messages[0].content[0].image_url.url"),
    ("tool name: 123", {"tools": [{"type": "function", "function": {"name": 123}}]},
     "tools[0].function.name"),
    ("tool name with spaces", {"tools": [{"type": "function", "function": {"name": "a b"}}]},
     "tools[0].function.name"),
    ("parameters: 'notaschema'", {"tools": [{"type": "function", "function": {
        "name": "f", "parameters": "notaschema"}}]}, "tools[0].function.parameters"),
    ("tool type: 'nope'", {"tools": [{"type": "nope", "function": {"name": "f"}}]},
     "tools[0].type"),
    ("tool without type", {"tools": [{"function": {"name": "f"}}]}, "tools[0].type"),
    ("tool_choice naming no defined function", {"tools": [FN], "tool_choice": {
        "type": "function", "function": {"name": "g"}}}, "tool_choice.function.name"),
    ("tool_choice required without tools", {"tool_choice": "required"}, "tool_choice"),
    ("tool_choice unknown word", {"tools": [FN], "tool_choice": "sometimes"}, "tool_choice"),
    ("response_format of an unknown type", {"response_format": {"type": "yaml"}},
     "response_format.type"),
    ("response_format schema given as a string", {"response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": "{}"}}},
     "response_format.json_schema.schema"),
    ("json_schema without a name", {"response_format": {
        "type": "json_schema", "json_schema": {"schema": {}}}},
     "response_format.json_schema.name"),
    ("logit_bias with a word for a key", {"logit_bias": {"hello": 5}}, "logit_bias"),
    ("logit_bias past 100", {"logit_bias": {"50256": 101}}, "logit_bias.50256"),
    ("logit_bias not a number", {"logit_bias": {"50256": "x"}}, "logit_bias.50256"),
    ("top_logprobs past 20", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("presence_penalty past 2", {"presence_penalty": 3}, "presence_penalty"),
    ("seed past 64 bits", {"seed": 2**64 - 1}, "seed"),
    ("max_tokens past 64 bits", {"max_tokens": 2**64 - 1}, "max_tokens"),
    ("metadata value not a string", {"metadata": {"a": 1}}, "metadata.a"),
    ("user with a NUL", {"user": "a\x00b"}, "user"),
    ("function_call naming no function", {"functions": [{"name": "f"}],
                                          "function_call": {"name": "g"}},
     "function_call.name"),
]


@pytest.mark.parametrize(("body", "param"), [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_a_malformed_field_is_a_400_naming_it_and_never_sent(
        igw: GatewayHandle, fresh_sim: SimHandle, body: dict[str, Any], param: str) -> None:
    r = post(igw, "/v1/chat/completions", {"model": "sim", "messages": HI, **body})
    err = openai_error(r)
    assert err["param"] == param, err
    assert f"'{param}'" in err["message"], err
    assert fresh_sim.stats()["requests"] == 0


async def test_valid_requests_the_sdk_can_send_still_pass(
        igw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = openai_client(igw.base_url, MASTER)
    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "Weather", "strict": True, "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"], "additionalProperties": False}}}
    kinds: list[dict[str, Any]] = [
        {"tools": [weather], "tool_choice": {"type": "function",
                                             "function": {"name": "get_weather"}}},
        {"tools": [weather], "tool_choice": {"type": "allowed_tools", "allowed_tools": {
            "mode": "auto", "tools": [{"type": "function",
                                       "function": {"name": "get_weather"}}]}}},
        {"tools": [weather], "tool_choice": "none", "parallel_tool_calls": False},
        {"response_format": {"type": "json_schema", "json_schema": {
            "name": "city", "strict": True, "schema": {
                "type": "object", "properties": {"name": {"type": "string"}},
                "required": ["name"], "$defs": {"unused": {"type": "string"}}}}}},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "text"}},
        {"logit_bias": {"50256": -100, "1000": 5}, "logprobs": True, "top_logprobs": 3},
        {"seed": -5, "presence_penalty": -2, "frequency_penalty": 2, "stop": ["\n\n"],
         "metadata": {"team": "search"}, "store": False, "user": "u-1",
         "reasoning_effort": "low", "service_tier": "auto", "verbosity": "low",
         "prompt_cache_key": "k", "safety_identifier": "s"},
        {"messages": [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                      {"role": "user", "content": [
                          {"type": "text", "text": "What is this?"},
                          {"type": "image_url", "image_url": {
                              "url": "https://example.com/cat.png", "detail": "low"}}]}]},
        {"messages": [*HI, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": "{}"}}]},
                      {"role": "tool", "tool_call_id": "c1", "content": [
                          {"type": "text", "text": "sunny"}]}],
         "tools": [weather]},
    ]
    for kw in kinds:
        req = {"model": "sim", "messages": HI, "max_tokens": 20, **kw}
        r = await c.chat.completions.create(**req)
        assert r.choices, kw
    assert fresh_sim.stats()["requests"] == len(kinds)


# --- item 11: GET /v1/models/{id} ------------------------------------------------------

async def test_a_served_model_can_be_retrieved_and_another_is_a_404(
        igw: GatewayHandle) -> None:
    c = openai_client(igw.base_url, MASTER)
    model = await c.models.retrieve("sim")
    assert model.id == "sim" and model.object == "model"
    assert (await c.models.retrieve("sim-alias")).id == "sim-alias"
    with pytest.raises(openai.NotFoundError) as e:
        await c.models.retrieve("gpt-9000")
    assert e.value.code == "model_not_found" and "sim" in e.value.message
    r = request(igw.url, "GET", "/v1/models/a/b")  # names may hold slashes
    assert openai_error(r, 404)["code"] == "model_not_found"
    r = request(igw.url, "DELETE", "/v1/models/sim")
    assert openai_error(r, 405)["code"] == "method_not_allowed"
