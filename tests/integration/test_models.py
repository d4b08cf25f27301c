"""Every model a provider serves (issue 18): dated snapshots, `provider/model` names and
models no table prices, through wildcard aliases (`openai/*`) in front of `tollway
simulate` — with the official SDKs, a configured gateway and the zero-setup default."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.helpers.admin import call, create_key, ledger_rows
from tests.helpers.clients import openai_client, track
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle
from tollway.accounting.prices import cost, format_usd, load_table
from tollway.types import Usage

MASTER = "master-" + os.urandom(8).hex()
PRICES = load_table()


def wildcard(provider: str, base: str, **kw: Any) -> dict[str, Any]:
    return {"deployments": [{"provider": provider, "model": "*", "api_base": base,
                             "api_key": "sim-key"}], **kw}


@pytest.fixture(scope="module")
def gw(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway({"models": {
        "openai/*": wildcard("openai", sim.openai_base),
        "anthropic/*": wildcard("anthropic", sim.anthropic_base),
        # The same upstream under a per-request cost ceiling.
        "capped/*": wildcard("openai", sim.openai_base, max_cost_usd=1.0),
        "fixed": {"deployments": [{"provider": "openai", "model": "gpt-4.1-nano",
                                   "api_base": sim.openai_base, "api_key": "sim-key"}]},
    }}, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


def client(gw: GatewayHandle, key: str = MASTER) -> openai.AsyncOpenAI:
    return openai_client(gw.base_url, key)


def priced(usage: Any, model: str) -> str:
    price = PRICES.get(model)
    assert price is not None
    return format_usd(cost(Usage(prompt_tokens=usage.prompt_tokens,
                                 completion_tokens=usage.completion_tokens), price))


HI = [{"role": "user", "content": "Say hello to the pinned snapshot."}]


async def ask(c: openai.AsyncOpenAI, model: str) -> Any:
    return await c.chat.completions.with_raw_response.create(
        model=model, messages=HI, max_tokens=12)  # type: ignore[arg-type]


async def test_a_dated_snapshot_is_served_and_priced_as_its_family(
        gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    raw = await ask(client(gw), "gpt-4o-mini-2024-07-18")
    reply = raw.parse()
    assert reply.choices[0].message.content and reply.usage is not None
    assert fresh_sim.stats()["recent_requests"][-1]["body"]["model"] == "gpt-4o-mini-2024-07-18"
    assert raw.headers["x-tollway-model"] == "gpt-4o-mini-2024-07-18"
    assert raw.headers["x-tollway-provider"] == "openai"
    assert raw.headers["x-tollway-cost-usd"] == priced(reply.usage, "gpt-4o-mini")
    row = next(r for r in ledger_rows(gw.url, MASTER)
               if r["request_id"] == raw.headers["x-request-id"])
    assert (row["model_asked"], row["model"], row["provider"], row["priced"]) == (
        "gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18", "openai", True)
    assert format_usd(row["cost_usd"]) == priced(reply.usage, "gpt-4o-mini")


@pytest.mark.parametrize(("name", "upstream", "family"), [
    ("openai/gpt-4o-2024-08-06", "gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4", "gpt-4", "gpt-4"),
    ("gpt-3.5-turbo", "gpt-3.5-turbo", "gpt-3.5-turbo"),
])
async def test_provider_prefixed_and_older_names(gw: GatewayHandle, fresh_sim: SimHandle,
                                                 name: str, upstream: str,
                                                 family: str) -> None:
    raw = await ask(client(gw), name)
    assert fresh_sim.stats()["recent_requests"][-1]["body"]["model"] == upstream
    usage = raw.parse().usage
    assert raw.headers["x-tollway-cost-usd"] == priced(usage, family)


async def test_a_claude_snapshot_goes_to_anthropic(gw: GatewayHandle,
                                                   fresh_sim: SimHandle) -> None:
    c = track(anthropic.AsyncAnthropic(base_url=gw.url, api_key=MASTER, max_retries=0))
    raw = await c.messages.with_raw_response.create(
        model="claude-3-5-haiku-20241022", max_tokens=12,
        messages=[{"role": "user", "content": "hello"}])
    msg = await raw.parse()
    sent = fresh_sim.stats()["recent_requests"][-1]
    assert (sent["endpoint"], sent["body"]["model"]) == ("/v1/messages",
                                                         "claude-3-5-haiku-20241022")
    price = PRICES.get("claude-3-5-haiku")
    assert price is not None
    want = cost(Usage(prompt_tokens=msg.usage.input_tokens,
                      completion_tokens=msg.usage.output_tokens), price)
    assert raw.headers["x-tollway-cost-usd"] == format_usd(want)


async def test_models_retrieve_and_list(gw: GatewayHandle) -> None:
    c = client(gw)
    for name in ("gpt-4o-mini-2024-07-18", "openai/gpt-4o-2024-08-06", "fixed",
                 "claude-sonnet-4-5-20250929", "openai/not-in-any-table"):
        assert (await c.models.retrieve(name)).id == name
    listed = {m.id async for m in c.models.list()}
    assert {"fixed", "gpt-4o", "gpt-4o-mini", "gpt-4", "claude-sonnet-4-5"} <= listed
    assert not any("*" in m for m in listed)
    for unknown in ("made-up-model", "openai/*", "mistral/large"):
        with pytest.raises(openai.NotFoundError) as got:
            await c.models.retrieve(unknown)
        err = got.value.body
        assert isinstance(err, dict) and err["code"] == "model_not_found", err
        assert set(err) == {"message", "type", "param", "code"}


async def test_an_unpriced_model_is_served_unless_a_dollar_limit_applies(
        gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    raw = await ask(client(gw), "openai/made-up-model")
    assert raw.headers["x-tollway-cost-usd"] == "unpriced"
    assert fresh_sim.stats()["recent_requests"][-1]["body"]["model"] == "made-up-model"
    # A per-request cost ceiling: refused before anything is sent, naming `price:`.
    with pytest.raises(openai.BadRequestError) as got:
        await ask(client(gw), "capped/made-up-model")
    assert got.value.code == "unpriced_model" and "price:" in got.value.message
    assert "made-up-model" in got.value.message
    await ask(client(gw), "capped/gpt-4o-mini")  # priced: the ceiling can be checked
    # A dollar budget on the key: likewise.
    secret, _ = create_key(gw.url, MASTER, budgets=[{"usd": 5, "period": "day"}])
    with pytest.raises(openai.BadRequestError) as got:
        await ask(client(gw, secret), "openai/made-up-model")
    assert got.value.code == "unpriced_model" and "price:" in got.value.message
    await ask(client(gw, secret), "gpt-4o-mini-2024-07-18")
    assert fresh_sim.stats()["requests_by_endpoint"]["/v1/chat/completions"] == 3


async def test_a_keys_allowed_models_take_wildcards_and_snapshots(
        gw: GatewayHandle) -> None:
    openai_only, _ = create_key(gw.url, MASTER, models=["openai/*"])
    await ask(client(gw, openai_only), "gpt-4o-mini-2024-07-18")
    await ask(client(gw, openai_only), "openai/o3")
    with pytest.raises(openai.PermissionDeniedError):
        await ask(client(gw, openai_only), "claude-3-5-haiku-20241022")
    gpt4o, _ = create_key(gw.url, MASTER, models=["gpt-4o"])
    await ask(client(gw, gpt4o), "gpt-4o-2024-08-06")  # its snapshot
    await ask(client(gw, gpt4o), "openai/gpt-4o")
    with pytest.raises(openai.PermissionDeniedError):
        await ask(client(gw, gpt4o), "gpt-4o-mini")  # another model
    # A name nothing serves is still refused when the key is made.
    status, body = call(gw.url, MASTER, "POST", "/admin/keys", {"models": ["nope-model"]})
    assert status == 400 and "nope-model" in body["error"]["message"]


async def test_the_zero_setup_default_serves_pinned_snapshots(fresh_sim: SimHandle) -> None:
    gw = start_gateway(None, env={"OPENAI_API_KEY": "sim-key",
                                  "OPENAI_BASE_URL": fresh_sim.openai_base})
    try:
        c = openai_client(gw.base_url, "x")
        for name, family in (("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
                             ("openai/gpt-4o-2024-08-06", "gpt-4o")):
            raw = await ask(c, name)
            assert raw.headers["x-tollway-cost-usd"] == priced(raw.parse().usage, family)
        assert (await c.models.retrieve("gpt-4o-mini-2024-07-18")).id
        listed = {m.id async for m in c.models.list()}
        assert {"local", "default", "gpt-4o-mini", "gpt-5"} <= listed
        assert "claude-sonnet-4-5" not in listed  # no ANTHROPIC_API_KEY
        with pytest.raises(openai.NotFoundError):
            await ask(c, "claude-sonnet-4-5")
    finally:
        gw.stop()
