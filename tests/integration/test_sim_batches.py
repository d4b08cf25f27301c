"""`tollway simulate`'s batch APIs against the official SDKs: OpenAI's Files and Batch
APIs, Anthropic's Message Batches.

One simulator subprocess serves the module; each test starts from zeroed stats, no
batches, and the start-up config. Status changes are awaited by polling the API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anthropic
import openai
import pytest
from openai.types import Batch

from tests.helpers import sim_fixtures
from tests.helpers.sim import SimHandle
from tollway.simulate.server import add_cli_args, config_from_args
from tollway.simulate.text import reply_text

# The module's own simulator and SDK clients (pytest finds fixtures among the
# module's names).
sim_server, sim = sim_fixtures.sim_server, sim_fixtures.sim
oai, claude = sim_fixtures.oai, sim_fixtures.claude

T = TypeVar("T")
ENDED = ("completed", "failed", "expired", "cancelled")


async def poll(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool],
               within: float = 15.0) -> T:
    """Fetch until `done` holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        obj = await fetch()
        if done(obj):
            return obj
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {within}s: {obj}")
        await asyncio.sleep(0.02)


def prompt(i: int) -> str:
    return f"Question {i}: what do rivers carry?"


def chat_line(i: int, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": prompt(i)}]}}


async def upload(oai: openai.AsyncOpenAI, lines: list[dict[str, Any]]) -> str:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    f = await oai.files.create(file=("input.jsonl", data), purpose="batch")
    return f.id


async def run_batch(oai: openai.AsyncOpenAI, lines: list[dict[str, Any]],
                    endpoint: Any = "/v1/chat/completions") -> Batch:
    batch = await oai.batches.create(input_file_id=await upload(oai, lines),
                                     endpoint=endpoint, completion_window="24h")
    return await poll(lambda: oai.batches.retrieve(batch.id), lambda b: b.status in ENDED)


async def jsonl(oai: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await oai.files.content(file_id)
    return [json.loads(line) for line in content.text.splitlines()]


def anthropic_request(i: int, model: str = "claude-haiku-4-5") -> dict[str, Any]:
    return {"custom_id": f"req-{i}", "params": {
        "model": model, "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt(i)}]}}


async def anthropic_ended(claude: anthropic.AsyncAnthropic, batch_id: str) -> Any:
    return await poll(lambda: claude.messages.batches.retrieve(batch_id),
                      lambda b: b.processing_status == "ended")


# -- OpenAI ----------------------------------------------------------------------------


async def test_openai_batch_of_100_answers_every_line_in_order(
        sim: SimHandle, oai: openai.AsyncOpenAI) -> None:
    lines = [chat_line(i) for i in range(100)]
    created = await oai.batches.create(
        input_file_id=await upload(oai, lines), endpoint="/v1/chat/completions",
        completion_window="24h", metadata={"job": "nightly"})
    assert created.status == "validating"
    assert created.metadata == {"job": "nightly"}
    batch = await poll(lambda: oai.batches.retrieve(created.id),
                       lambda b: b.status in ENDED)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed,
            batch.request_counts.failed) == (100, 100, 0)
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.error_file_id is None
    out = await jsonl(oai, batch.output_file_id)
    assert [row["custom_id"] for row in out] == [f"req-{i}" for i in range(100)]
    assert len({row["id"] for row in out}) == 100
    for i, row in enumerate(out):
        assert row["error"] is None
        assert row["response"]["status_code"] == 200
        body = row["response"]["body"]
        assert row["response"]["request_id"] == body["id"]
        assert body["choices"][0]["message"]["content"] == reply_text(prompt(i), 16)

    # The same answer and usage as the interactive endpoint's, counted apart.
    stats = sim.stats()
    usage = stats["batch_by_model"]["gpt-4o-mini"]
    assert usage["requests"] == 100 and usage["completion_tokens"] == 1600
    assert stats["by_model"] == {}
    assert stats["batches"] == {"created": 1, "lines": 100, "succeeded": 100, "errored": 0,
                                "expired": 0, "canceled": 0}
    assert batch.usage is not None
    assert batch.usage.input_tokens == usage["prompt_tokens"]
    assert batch.usage.output_tokens == 1600
    first = out[0]["response"]["body"]
    live = await oai.chat.completions.create(model="gpt-4o-mini",
                                             messages=lines[0]["body"]["messages"])
    assert live.choices[0].message.content == first["choices"][0]["message"]["content"]
    assert live.usage is not None
    assert live.usage.prompt_tokens == first["usage"]["prompt_tokens"]
    assert usage["prompt_tokens"] == sum(
        row["response"]["body"]["usage"]["prompt_tokens"] for row in out)
    assert sim.stats()["by_model"]["gpt-4o-mini"]["requests"] == 1


async def test_openai_partial_failures_go_to_the_error_file(
        sim: SimHandle, oai: openai.AsyncOpenAI) -> None:
    sim.config(batch_error_rate=0.3)
    lines = [chat_line(i, "no-such-model" if i == 5 else "gpt-4o-mini") for i in range(40)]
    batch = await run_batch(oai, lines)
    assert batch.status == "completed"
    out, errors = await jsonl(oai, batch.output_file_id), await jsonl(oai, batch.error_file_id)
    ids = [f"req-{i}" for i in range(40)]
    assert sorted([r["custom_id"] for r in out + errors], key=ids.index) == ids
    for rows in (out, errors):  # each in input order
        assert [r["custom_id"] for r in rows] == sorted((r["custom_id"] for r in rows),
                                                        key=ids.index)
    by_id = {r["custom_id"]: r for r in errors}
    missing = by_id["req-5"]["response"]
    assert missing["status_code"] == 404
    assert missing["body"]["error"]["code"] == "model_not_found"
    failed = [r for r in errors if r["custom_id"] != "req-5"]
    assert 3 <= len(failed) <= 25  # 30 % of 39, drawn
    for r in failed:
        assert r["error"] is None
        assert r["response"]["status_code"] == 500
        assert r["response"]["body"]["error"]["type"] == "server_error"
    assert batch.request_counts is not None
    assert batch.request_counts.completed == len(out)
    assert batch.request_counts.failed == len(errors)
    stats = sim.stats()
    assert stats["batches"]["errored"] == len(errors)
    assert stats["batch_by_model"]["gpt-4o-mini"]["requests"] == len(out)


async def test_openai_embeddings_and_responses_batches(oai: openai.AsyncOpenAI) -> None:
    emb = await run_batch(oai, [
        {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "text-embedding-3-small", "input": f"text {i}"}}
        for i in range(3)], endpoint="/v1/embeddings")
    rows = await jsonl(oai, emb.output_file_id)
    assert [r["custom_id"] for r in rows] == ["e0", "e1", "e2"]
    assert len(rows[0]["response"]["body"]["data"][0]["embedding"]) == 1536
    resp = await run_batch(oai, [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses",
         "body": {"model": "gpt-4o-mini", "input": prompt(i)}} for i in range(3)],
        endpoint="/v1/responses")
    rows = await jsonl(oai, resp.output_file_id)
    body = rows[2]["response"]["body"]
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["output"][0]["content"][0]["text"] == reply_text(prompt(2), 16)


async def test_openai_cancel_leaves_unfinished_lines_unanswered(
        sim: SimHandle, oai: openai.AsyncOpenAI) -> None:
    sim.config(batch_delay_s=10)  # a line every 0.1 s
    created = await oai.batches.create(input_file_id=await upload(
        oai, [chat_line(i) for i in range(100)]), endpoint="/v1/chat/completions",
        completion_window="24h")
    await poll(lambda: oai.batches.retrieve(created.id),
               lambda b: b.request_counts is not None and b.request_counts.completed >= 1)
    cancelling = await oai.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    batch = await poll(lambda: oai.batches.retrieve(created.id),
                       lambda b: b.status in ENDED)
    assert batch.status == "cancelled" and batch.cancelled_at
    assert batch.request_counts is not None
    done = batch.request_counts.completed
    assert 1 <= done < 100 and batch.request_counts.failed == 0
    out = await jsonl(oai, batch.output_file_id)
    assert [r["custom_id"] for r in out] == [f"req-{i}" for i in range(done)]
    assert batch.error_file_id is None
    stats = sim.stats()
    assert stats["batches"]["canceled"] == 100 - done
    assert stats["batch_by_model"]["gpt-4o-mini"]["requests"] == done
    with pytest.raises(openai.BadRequestError):
        await oai.batches.cancel(created.id)


async def test_openai_expiry_puts_unfinished_lines_in_the_error_file(
        sim: SimHandle, oai: openai.AsyncOpenAI) -> None:
    # A line every 0.04 s, the window closing at 0.5 s: lines 1..12 are answered.
    sim.config(batch_delay_s=4, batch_expiry_s=0.5)
    batch = await run_batch(oai, [chat_line(i) for i in range(100)])
    assert batch.status == "expired" and batch.expired_at
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (12, 88)
    out, errors = await jsonl(oai, batch.output_file_id), await jsonl(oai, batch.error_file_id)
    assert [r["custom_id"] for r in out] == [f"req-{i}" for i in range(12)]
    assert [r["custom_id"] for r in errors] == [f"req-{i}" for i in range(12, 100)]
    for r in errors:
        assert r["response"] is None
        assert r["error"]["code"] == "batch_expired"
    assert sim.stats()["batches"]["expired"] == 88


async def test_openai_invalid_input_file_fails_the_batch(oai: openai.AsyncOpenAI) -> None:
    lines = [chat_line(0), chat_line(0), {**chat_line(2), "url": "/v1/embeddings"}]
    batch = await run_batch(oai, lines)
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [
        ("duplicate_custom_id", 2), ("invalid_url", 3)]
    assert batch.output_file_id is None and batch.error_file_id is None


async def test_openai_files_and_batch_listing(oai: openai.AsyncOpenAI) -> None:
    file_id = await upload(oai, [chat_line(0)])
    f = await oai.files.retrieve(file_id)
    assert (f.filename, f.purpose, f.status) == ("input.jsonl", "batch", "processed")
    assert json.loads((await oai.files.content(file_id)).text) == chat_line(0)
    with pytest.raises(openai.BadRequestError):
        await oai.files.create(file=("input.txt", b"{}"), purpose="batch")
    ids = [(await oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                     completion_window="24h")).id for _ in range(3)]
    page = await oai.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id async for b in await oai.batches.list(limit=2)] == ids[::-1]
    deleted = await oai.files.delete(file_id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        await oai.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        await oai.batches.retrieve("batch_nope")


# -- Anthropic -------------------------------------------------------------------------


async def test_anthropic_batch_of_100_results_in_order(
        sim: SimHandle, claude: anthropic.AsyncAnthropic) -> None:
    created = await claude.messages.batches.create(
        requests=[anthropic_request(i) for i in range(100)])
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 100 and created.results_url is None
    batch = await anthropic_ended(claude, created.id)
    assert batch.ended_at is not None and batch.results_url
    counts = batch.request_counts
    assert (counts.processing, counts.succeeded, counts.errored) == (0, 100, 0)
    results = [r async for r in await claude.messages.batches.results(batch.id)]
    assert [r.custom_id for r in results] == [f"req-{i}" for i in range(100)]
    for i, r in enumerate(results):
        assert r.result.type == "succeeded"
        block = r.result.message.content[0]
        assert block.type == "text" and block.text == reply_text(prompt(i), 16)
    live = await claude.messages.create(**anthropic_request(0)["params"])
    first = results[0].result
    assert first.type == "succeeded"
    assert live.usage.input_tokens == first.message.usage.input_tokens
    stats = sim.stats()
    assert stats["batch_by_model"]["claude-haiku-4-5"]["requests"] == 100
    assert stats["batch_by_model"]["claude-haiku-4-5"]["completion_tokens"] == 1600
    assert stats["by_model"]["claude-haiku-4-5"]["requests"] == 1


async def test_anthropic_errored_results(sim: SimHandle,
                                         claude: anthropic.AsyncAnthropic) -> None:
    sim.config(batch_error_rate=0.3)
    requests = [anthropic_request(i) for i in range(30)]
    requests[3] = anthropic_request(3, model="no-such-model")
    del requests[4]["params"]["max_tokens"]
    created = await claude.messages.batches.create(requests=requests)
    batch = await anthropic_ended(claude, created.id)
    results = {r.custom_id: r.result async for r in
               await claude.messages.batches.results(batch.id)}
    assert len(results) == 30
    assert results["req-3"].type == "errored"
    assert results["req-3"].error.error.type == "not_found_error"
    assert results["req-4"].type == "errored"
    assert results["req-4"].error.error.type == "invalid_request_error"
    server_errors = [r for r in results.values()
                     if r.type == "errored" and r.error.error.type == "api_error"]
    assert 2 <= len(server_errors) <= 20  # 30 % of 28, drawn
    errored = sum(r.type == "errored" for r in results.values())
    assert batch.request_counts.errored == errored
    assert batch.request_counts.succeeded == 30 - errored


async def test_anthropic_cancel(sim: SimHandle, claude: anthropic.AsyncAnthropic) -> None:
    sim.config(batch_delay_s=10)
    created = await claude.messages.batches.create(
        requests=[anthropic_request(i) for i in range(100)])
    canceling = await claude.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    batch = await anthropic_ended(claude, created.id)
    counts = batch.request_counts
    assert counts.canceled >= 90 and counts.succeeded + counts.canceled == 100
    kinds = [r.result.type async for r in await claude.messages.batches.results(batch.id)]
    assert kinds == ["succeeded"] * counts.succeeded + ["canceled"] * counts.canceled
    with pytest.raises(anthropic.BadRequestError):
        await claude.messages.batches.cancel(created.id)


async def test_anthropic_expiry(sim: SimHandle, claude: anthropic.AsyncAnthropic) -> None:
    sim.config(batch_delay_s=4, batch_expiry_s=0.5)
    created = await claude.messages.batches.create(
        requests=[anthropic_request(i) for i in range(100)])
    batch = await anthropic_ended(claude, created.id)
    assert (batch.request_counts.succeeded, batch.request_counts.expired) == (12, 88)
    kinds = [r.result.type async for r in await claude.messages.batches.results(batch.id)]
    assert kinds == ["succeeded"] * 12 + ["expired"] * 88


async def test_anthropic_listing_and_unfinished_results(
        sim: SimHandle, claude: anthropic.AsyncAnthropic) -> None:
    sim.config(batch_delay_s=30)
    ids = [(await claude.messages.batches.create(
        requests=[anthropic_request(0)])).id for _ in range(3)]
    page = await claude.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert page.last_id == ids[1]
    assert [b.id async for b in await claude.messages.batches.list(limit=2)] == ids[::-1]
    newer = await claude.messages.batches.list(before_id=ids[0], limit=1)
    assert [b.id for b in newer.data] == [ids[1]] and newer.has_more
    with pytest.raises(anthropic.AnthropicError):
        await claude.messages.batches.results(ids[0])
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.batches.retrieve("msgbatch_nope")


# -- switches --------------------------------------------------------------------------


async def test_batches_off_answer_404(sim: SimHandle, oai: openai.AsyncOpenAI,
                                      claude: anthropic.AsyncAnthropic) -> None:
    file_id = await upload(oai, [chat_line(0)])
    sim.config(batches=False)
    with pytest.raises(openai.NotFoundError):
        await oai.files.create(file=("input.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(openai.NotFoundError):
        await oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                 completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        await oai.batches.list()
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.batches.create(
            requests=[anthropic_request(0)])
    # The interactive endpoints are untouched.
    r = await oai.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "user", "content": "hi"}])
    assert r.choices[0].message.content


async def test_batch_routes_check_the_key(sim: SimHandle, oai: openai.AsyncOpenAI,
                                          claude: anthropic.AsyncAnthropic) -> None:
    sim.config(require_key="right")
    with pytest.raises(openai.AuthenticationError):
        await oai.batches.list()
    with pytest.raises(anthropic.AuthenticationError):
        await claude.messages.batches.list()


def test_batch_knobs_from_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    cfg = config_from_args(parser.parse_args([
        "--no-batches", "--batch-delay-s", "2", "--batch-error-rate", "0.1",
        "--batch-expiry-s", "60"]))
    assert (cfg.batches, cfg.batch_delay_s, cfg.batch_error_rate,
            cfg.batch_expiry_s) == (False, 2.0, 0.1, 60.0)
    assert config_from_args(parser.parse_args([])).batches is True
