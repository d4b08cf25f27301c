"""The official Anthropic SDK against Tollway's /v1/messages, with both kinds of
upstream behind it: an OpenAI-compatible one (`sim`) and an Anthropic one (`sim-claude`)."""

from __future__ import annotations

import anthropic
import pytest

from tests.helpers.clients import track
from tests.helpers.gateway import GatewayHandle
from tests.helpers.sim import SimHandle
from tollway.simulate.text import reply_text


def client(gw: GatewayHandle) -> anthropic.AsyncAnthropic:
    return track(anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0,
                                          timeout=30))


UPSTREAM = {"sim": "sim-model", "sim-claude": "claude-sim"}


@pytest.mark.parametrize("model", ["sim", "sim-claude"])
async def test_messages_json(gw: GatewayHandle, fresh_sim: SimHandle, model: str) -> None:
    msg = await client(gw).messages.create(
        model=model, max_tokens=10, system="be brief",
        messages=[{"role": "user", "content": "name a river"}])
    assert msg.content[0].type == "text"
    assert msg.content[0].text == reply_text("name a river", 10)
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 10
    assert msg.usage.input_tokens > 0
    assert msg.model == UPSTREAM[model]  # the model that actually answered


@pytest.mark.parametrize("model", ["sim", "sim-claude"])
async def test_messages_stream(gw: GatewayHandle, fresh_sim: SimHandle, model: str) -> None:
    async with client(gw).messages.stream(
            model=model, max_tokens=50,
            messages=[{"role": "user", "content": "stream a river"}]) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == reply_text("stream a river", 16)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 16
    assert final.usage.input_tokens > 0
    assert final.model == UPSTREAM[model]


@pytest.mark.parametrize("model", ["sim", "sim-claude"])
async def test_a_streams_message_start_says_the_prompts_tokens(
        gw: GatewayHandle, fresh_sim: SimHandle, model: str) -> None:
    """As Anthropic's does (it said 0): from the upstream when it says them at the
    start (sim-claude), else the gateway's own count (sim)."""
    async with client(gw).messages.stream(
            model=model, max_tokens=20,
            messages=[{"role": "user", "content": "how long is the Danube?"}]) as stream:
        starts = [e.message.usage.input_tokens async for e in stream
                  if e.type == "message_start"]
        final = await stream.get_final_message()
    assert len(starts) == 1 and starts[0] > 0
    assert starts[0] == final.usage.input_tokens


async def test_tool_use_round_trip(gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    tools = [{"name": "get_weather", "description": "weather",
              "input_schema": {"type": "object", "properties": {}}}]
    msg = await client(gw).messages.create(
        model="sim", max_tokens=50, tools=tools,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "weather?"}])
    assert msg.stop_reason == "tool_use"
    use = next(b for b in msg.content if b.type == "tool_use")
    assert use.name == "get_weather"
    follow = await client(gw).messages.create(
        model="sim", max_tokens=5, tools=tools,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "weather?"},
                  {"role": "assistant", "content": msg.content},  # type: ignore[typeddict-item]
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                "content": "sunny"}]}])
    assert follow.content[0].type == "text"
    sent = fresh_sim.stats()["recent_requests"][-1]["body"]["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}


async def test_errors_arrive_as_anthropic_sdk_exceptions(gw: GatewayHandle,
                                                         fresh_sim: SimHandle) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        await client(gw).messages.create(model="nope", max_tokens=5,
                                         messages=[{"role": "user", "content": "x"}])
    assert "'nope' does not exist" in nf.value.message
    fresh_sim.config(next_faults=["429"], retry_after=30)  # too long to wait out: passed on
    with pytest.raises(anthropic.RateLimitError) as rl:
        await client(gw).messages.create(model="sim", max_tokens=5,
                                         messages=[{"role": "user", "content": "x"}])
    assert rl.value.response.headers["retry-after"] == "30"
    with pytest.raises(anthropic.BadRequestError):
        await client(gw).messages.create(model="sim", max_tokens=5,
                                         messages=[])
