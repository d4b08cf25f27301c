"""Anthropic's Message Batches through the official anthropic SDK against a running
gateway, its requests run by the gateway itself (the batch runner) on an Anthropic
deployment (the simulator): create, poll, list, results in input order with a ledger
row per request carrying the batch; a request the gateway refuses erroring alone;
cancel half-way; a bad requests list refused naming the index; each batch API seeing
only its own batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.helpers.admin import create_key, ledger_rows
from tests.helpers.clients import openai_client, track
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle

MASTER = "sk-master-message-batches"
MODEL = "claude-haiku-4-5"


@pytest.fixture(scope="module")
def gw_msg(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway({
        "models": {MODEL: {"deployments": [{"provider": "anthropic", "model": MODEL,
                                            "api_base": sim.anthropic_base,
                                            "api_key": "k"}]}},
        "auth": {"master_key": MASTER}})
    try:
        yield handle
    finally:
        handle.stop()


def client(gw: GatewayHandle, key: str = MASTER) -> anthropic.AsyncAnthropic:
    return track(anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=0,
                                          timeout=30))


def requests(n: int, model: str = MODEL, **params: Any) -> list[dict[str, Any]]:
    return [{"custom_id": f"req-{i}", "params": {
        "model": model, "max_tokens": 64,
        "messages": [{"role": "user", "content": f"question {i}"}], **params}}
        for i in range(n)]


async def ended(c: anthropic.AsyncAnthropic, batch_id: str, within: float = 120) -> Any:
    """Poll as the SDK's users do, until the batch has ended."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        b = await c.messages.batches.retrieve(batch_id)
        if b.processing_status == "ended":
            return b
        await asyncio.sleep(0.1)  # polling the API: what a client of it does
    raise TimeoutError(f"batch {batch_id} still {b.processing_status}")


async def results(c: anthropic.AsyncAnthropic, batch_id: str) -> list[Any]:
    return [r async for r in await c.messages.batches.results(batch_id)]


def batch_rows(gw: GatewayHandle, batch_id: str) -> list[dict[str, Any]]:
    return [r for r in ledger_rows(gw.url, MASTER) if r.get("batch_id") == batch_id]


async def test_two_hundred_requests_with_the_anthropic_sdk(gw_msg: GatewayHandle,
                                                          fresh_sim: SimHandle) -> None:
    c = client(gw_msg)
    b = await c.messages.batches.create(requests=requests(200))  # type: ignore[arg-type]
    assert b.id.startswith("msgbatch_") and b.type == "message_batch"
    assert b.processing_status == "in_progress" and b.results_url is None
    assert b.expires_at > b.created_at
    b = await ended(c, b.id)
    counts = b.request_counts
    assert (counts.succeeded, counts.errored, counts.processing, counts.canceled) == (
        200, 0, 0, 0)
    assert b.ended_at is not None and b.results_url is not None
    got = await results(c, b.id)
    assert [r.custom_id for r in got] == [f"req-{i}" for i in range(200)]
    assert all(r.result.type == "succeeded" for r in got)
    message = got[7].result.message
    assert message.type == "message" and message.content[0].text
    assert message.usage.output_tokens > 0
    # Each request went upstream once and has its ledger row, with the batch's id.
    assert fresh_sim.stats()["requests"] == 200
    rows = batch_rows(gw_msg, b.id)
    assert len(rows) == len({r["id"] for r in rows}) == 200
    assert all(r["outcome"] == "ok" for r in rows)
    assert b.model_extra is not None
    assert b.model_extra["tollway"]["cost_usd"] == pytest.approx(
        sum(r["cost_usd"] for r in rows), rel=1e-6)
    # Listed, newest first; paged either way.
    second = await c.messages.batches.create(requests=requests(1))  # type: ignore[arg-type]
    page = await c.messages.batches.list(limit=1)
    assert [x.id for x in page.data] == [second.id] and page.has_more
    page = await c.messages.batches.list(limit=1, after_id=second.id)
    assert [x.id for x in page.data] == [b.id]
    page = await c.messages.batches.list(limit=5, before_id=b.id)
    assert [x.id for x in page.data] == [second.id] and not page.has_more
    await ended(c, second.id)


async def test_a_request_the_gateway_refuses_errors_alone(gw_msg: GatewayHandle,
                                                         fresh_sim: SimHandle) -> None:
    c = client(gw_msg)
    asked = requests(3)
    asked.insert(1, {"custom_id": "unknown-model",
                     "params": {**asked[0]["params"], "model": "no-such-model"}})
    asked.append({"custom_id": "no-messages", "params": {"model": MODEL, "max_tokens": 8}})
    b = await ended(c, (await c.messages.batches.create(
        requests=asked)).id)  # type: ignore[arg-type]
    assert (b.request_counts.succeeded, b.request_counts.errored) == (3, 2)
    got = await results(c, b.id)
    assert [r.custom_id for r in got] == ["req-0", "unknown-model", "req-1", "req-2",
                                          "no-messages"]
    assert [r.result.type for r in got] == ["succeeded", "errored", "succeeded",
                                            "succeeded", "errored"]
    unknown, invalid = got[1].result.error, got[4].result.error
    assert unknown.type == "error" and unknown.error.type == "not_found_error"
    assert "no-such-model" in unknown.error.message
    assert invalid.error.type == "invalid_request_error"
    assert "messages" in invalid.error.message
    assert fresh_sim.stats()["requests"] == 3  # the refused ones never went upstream
    assert len(batch_rows(gw_msg, b.id)) == 5  # each has its ledger row all the same


async def test_cancelling_half_way_leaves_the_unrun_requests_canceled(
        gw_msg: GatewayHandle, fresh_sim: SimHandle) -> None:
    fresh_sim.config(ttft_ms=20)
    c = client(gw_msg)
    b = await c.messages.batches.create(requests=requests(300))  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while (await c.messages.batches.retrieve(b.id)).request_counts.succeeded < 16:
        assert time.monotonic() < deadline, "fewer than 16 requests answered"
        await asyncio.sleep(0.05)  # polling the API: nothing to await
    # Results are not there before the batch has ended: Anthropic's 400.
    async with httpx.AsyncClient() as h:
        early = await h.get(f"{gw_msg.url}/v1/messages/batches/{b.id}/results",
                            headers={"x-api-key": MASTER})
    assert early.status_code == 400
    assert early.json()["error"]["type"] == "invalid_request_error"
    cancelled = await c.messages.batches.cancel(b.id)
    assert cancelled.processing_status in ("canceling", "ended")
    assert cancelled.cancel_initiated_at is not None
    b = await ended(c, b.id)
    counts = b.request_counts
    assert 16 <= counts.succeeded < 300 and counts.errored == 0
    assert counts.succeeded + counts.canceled == 300
    got = await results(c, b.id)
    assert [r.custom_id for r in got] == [f"req-{i}" for i in range(300)]
    kinds = [r.result.type for r in got]
    assert kinds.count("succeeded") == counts.succeeded
    assert kinds.count("canceled") == counts.canceled
    assert kinds[-1] == "canceled"  # the lines run in order: the last never did
    assert fresh_sim.stats()["requests"] == len(batch_rows(gw_msg, b.id)) == counts.succeeded
    with pytest.raises(anthropic.BadRequestError) as e:
        await c.messages.batches.cancel(b.id)
    assert "already ended" in e.value.message


async def test_a_batch_that_cannot_fit_a_budget_is_refused_up_front(
        gw_msg: GatewayHandle, fresh_sim: SimHandle) -> None:
    secret, _ = create_key(gw_msg.url, MASTER, budgets=[{"usd": 0.01, "period": "day"}])
    c = client(gw_msg, secret)
    with pytest.raises(anthropic.RateLimitError) as e:
        await c.messages.batches.create(
            requests=requests(100, max_tokens=1000))  # type: ignore[arg-type]
    assert "daily dollar budget of key" in e.value.message
    assert "over its 100 lines" in e.value.message
    assert e.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert (await c.messages.batches.list()).data == []  # nothing was made, nothing sent
    assert fresh_sim.stats()["requests"] == 0


@pytest.mark.parametrize(("asked", "says"), [
    ([], "requests: a non-empty list"),
    ([*requests(2), {**requests(1)[0], "custom_id": "req-0"}],
     "requests.2.custom_id: 'req-0' is used by an earlier request"),
    ([*requests(1), {**requests(1)[0], "custom_id": "has space"}],
     "requests.1.custom_id: must match ^[a-zA-Z0-9_-]{1,64}$"),
    ([*requests(1), {"custom_id": "x", "params": {"max_tokens": 8, "messages": []}}],
     "requests.1.params.model: must name a model"),
    ([*requests(4), {**requests(1, stream=True)[0], "custom_id": "s"}],
     "requests.4.params.stream: a batch request cannot stream"),
    ([*requests(1), {"custom_id": "x"}], "requests.1.params: must be an object"),
])
async def test_a_bad_requests_list_is_refused_naming_the_index(
        gw_msg: GatewayHandle, fresh_sim: SimHandle, asked: list[dict[str, Any]],
        says: str) -> None:
    c = client(gw_msg)
    before = [x.id for x in (await c.messages.batches.list()).data]
    with pytest.raises(anthropic.BadRequestError) as e:
        await c.messages.batches.create(requests=asked)  # type: ignore[arg-type]
    assert says in e.value.message
    assert isinstance(e.value.body, dict) and e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert [x.id for x in (await c.messages.batches.list()).data] == before  # none made
    assert fresh_sim.stats()["requests"] == 0


async def test_each_batch_api_sees_only_its_own_batches(gw_msg: GatewayHandle,
                                                       fresh_sim: SimHandle) -> None:
    c = client(gw_msg)
    o = openai_client(gw_msg.base_url, MASTER)
    mine = await ended(c, (await c.messages.batches.create(
        requests=requests(2))).id)  # type: ignore[arg-type]
    f = await o.files.create(file=("in.jsonl", b'{"custom_id": "a", "method": "POST", '
                                   b'"url": "/v1/chat/completions", "body": {"model": '
                                   b'"claude-haiku-4-5", "messages": [{"role": "user", '
                                   b'"content": "hi"}]}}\n'),
                             purpose="batch")
    theirs = await o.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                    completion_window="24h")
    assert mine.id not in [x.id async for x in o.batches.list()]
    assert theirs.id not in [x.id async for x in c.messages.batches.list()]
    with pytest.raises(openai.NotFoundError):
        await o.batches.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        await o.batches.cancel(mine.id)
    with pytest.raises(anthropic.NotFoundError) as e:
        await c.messages.batches.retrieve(theirs.id)
    assert e.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    # A message batch writes no files: its results are read from its requests.
    assert not [x for x in (await o.files.list()).data if x.filename.startswith(mine.id)]
    # Another key does not see it.
    secret, _ = create_key(gw_msg.url, MASTER)
    with pytest.raises(anthropic.NotFoundError):
        await client(gw_msg, secret).messages.batches.retrieve(mine.id)
    assert (await client(gw_msg, secret).messages.batches.list()).data == []


async def test_a_thousand_requests_through_anthropics_batch_api_at_its_price(
        sim: SimHandle, fresh_sim: SimHandle) -> None:
    """The deployment sends its batches to Anthropic's own Message Batches API: one
    upstream batch, nothing sent interactively, every row at the batch rates."""
    gw = start_gateway({
        "models": {MODEL: {"deployments": [{"provider": "anthropic", "model": MODEL,
                                            "api_base": sim.anthropic_base, "api_key": "k",
                                            "batches": "upstream"}]}},
        "server": {"batch_poll_seconds": 0.05}, "auth": {"master_key": MASTER}})
    try:
        c = client(gw)
        b = await c.messages.batches.create(requests=requests(1000))  # type: ignore[arg-type]
        b = await ended(c, b.id)
        assert (b.request_counts.succeeded, b.request_counts.errored) == (1000, 0)
        got = await results(c, b.id)
        assert [r.custom_id for r in got] == [f"req-{i}" for i in range(1000)]
        assert got[9].result.type == "succeeded" and got[9].result.message.content
        stats = fresh_sim.stats()
        assert stats["requests"] == 0
        assert (stats["batches"]["created"], stats["batches"]["lines"]) == (1, 1000)
        rows = batch_rows(gw, b.id)
        assert len(rows) == 1000
        for r in rows:  # claude-haiku-4-5 in a batch: $0.50 in, $2.50 out per million
            assert r["cost_usd"] == pytest.approx(
                (r["input_tokens"] * 0.50 + r["output_tokens"] * 2.50) / 1e6, rel=1e-9)
    finally:
        gw.stop()
