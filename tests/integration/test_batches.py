"""Batches through the official openai SDK against a running gateway, its lines run by
the gateway itself (the local runner) on a chat-only upstream (the simulator): upload,
create, poll, download; a ledger row per line carrying the batch; bad files refused
naming the line; a batch that cannot fit a budget refused up front; cancel releasing
exactly what was not spent; a restart mid-batch answering every line once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import orjson
import pytest

from tests.helpers.admin import create_key, ledger_rows
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.gateway import fleet as fleet_of
from tests.helpers.postgres import scratch_database, url_of
from tests.helpers.sim import SimHandle

MASTER = "sk-master-batches"


def config(sim: SimHandle, **extra: Any) -> dict[str, Any]:
    def dep(model: str) -> dict[str, Any]:
        return {"deployments": [{"provider": "openai", "model": model,
                                 "api_base": f"{sim.url}/v1", "api_key": "k"}]}
    return {"models": {"gpt-4o-mini": dep("gpt-4o-mini"),
                       "text-embedding-3-small": dep("text-embedding-3-small")},
            "auth": {"master_key": MASTER}, **extra}


@pytest.fixture(scope="module")
def gw_batch(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway(config(sim))
    try:
        yield handle
    finally:
        handle.stop()


def client(gw: GatewayHandle, key: str = MASTER) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


def jsonl(n: int, model: str = "gpt-4o-mini", **body: Any) -> bytes:
    return b"".join(orjson.dumps({
        "custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}],
                 **body}}) + b"\n" for i in range(n))


async def done(c: openai.AsyncOpenAI, batch_id: str, within: float = 120) -> Any:
    """Poll as the SDK's users do, until the batch ends."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        b = await c.batches.retrieve(batch_id)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return b
        await asyncio.sleep(0.1)  # polling the API: what a client of it does
    raise TimeoutError(f"batch {batch_id} still {b.status}")


def batch_rows(gw: GatewayHandle, batch_id: str) -> list[dict[str, Any]]:
    return [r for r in ledger_rows(gw.url, MASTER) if r.get("batch_id") == batch_id]


async def submit(c: openai.AsyncOpenAI, content: bytes) -> Any:
    f = await c.files.create(file=("in.jsonl", content), purpose="batch")
    return await c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")


async def until_done(c: openai.AsyncOpenAI, batch_id: str, lines: int) -> Any:
    """Poll until at least `lines` lines are done (to act half-way through)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        b = await c.batches.retrieve(batch_id)
        if b.request_counts.completed >= lines:
            return b
        await asyncio.sleep(0.05)
    raise TimeoutError(f"batch {batch_id}: fewer than {lines} lines done")


async def test_a_thousand_lines_with_the_openai_sdk(gw_batch: GatewayHandle,
                                                   fresh_sim: SimHandle) -> None:
    c = client(gw_batch)
    f = await c.files.create(file=("in.jsonl", jsonl(1000)), purpose="batch")
    assert (f.purpose, f.bytes) == ("batch", len(jsonl(1000)))
    b = await c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                               completion_window="24h", metadata={"job": "nightly"})
    assert b.status == "in_progress" and b.request_counts.total == 1000
    b = await done(c, b.id)
    assert b.status == "completed", b
    assert (b.request_counts.completed, b.request_counts.failed) == (1000, 0)
    assert b.metadata == {"job": "nightly"} and b.error_file_id is None
    out = (await c.files.content(b.output_file_id)).content.splitlines()
    results = [orjson.loads(line) for line in out]
    assert [r["custom_id"] for r in results] == [f"req-{i}" for i in range(1000)]
    assert all(r["response"]["status_code"] == 200 for r in results)
    assert results[7]["response"]["body"]["choices"][0]["message"]["content"]
    # Each line went upstream once, and has its ledger row, with the batch's id.
    assert fresh_sim.stats()["requests"] == 1000
    rows = batch_rows(gw_batch, b.id)
    assert len(rows) == 1000 and all(r["outcome"] == "ok" for r in rows)
    cost = sum(r["cost_usd"] for r in rows)
    assert b.model_extra is not None
    assert b.model_extra["tollway"]["cost_usd"] == pytest.approx(cost, rel=1e-6)
    # Listed, newest first.
    page = await c.batches.list(limit=1)
    assert page.data[0].id == b.id


async def test_a_line_the_gateway_refuses_fails_alone(gw_batch: GatewayHandle,
                                                      fresh_sim: SimHandle) -> None:
    c = client(gw_batch)
    lines = jsonl(3) + jsonl(1, model="no-such-model").replace(b"req-0", b"req-bad")
    f = await c.files.create(file=("in.jsonl", lines), purpose="batch")
    b = await done(c, (await c.batches.create(input_file_id=f.id,
                                              endpoint="/v1/chat/completions",
                                              completion_window="24h")).id)
    assert (b.status, b.request_counts.completed, b.request_counts.failed) == (
        "completed", 3, 1)
    err = orjson.loads((await c.files.content(b.error_file_id)).content)
    assert err["custom_id"] == "req-bad" and err["response"]["status_code"] == 404
    assert "no-such-model" in err["response"]["body"]["error"]["message"]


@pytest.mark.parametrize(("content", "says"), [
    (b"not json\n", "line 1: not JSON"),
    (jsonl(2) + jsonl(1), "line 3: custom_id 'req-0' is used by an earlier line"),
    (jsonl(1) + orjson.dumps({"custom_id": "x", "method": "POST", "url": "/v1/completions",
                              "body": {"model": "m"}}) + b"\n", "line 2: url"),
    (jsonl(2) + jsonl(1, user="x" * 1_100_000).replace(b"req-0", b"req-big"),
     "line 3: 1,100,"),
])
async def test_a_bad_file_is_refused_naming_the_line(gw_batch: GatewayHandle, content: bytes,
                                                     says: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        await client(gw_batch).files.create(file=("in.jsonl", content), purpose="batch")
    assert says in e.value.message


async def test_another_keys_files_and_batches_are_not_found(gw_batch: GatewayHandle) -> None:
    c = client(gw_batch)
    f = await c.files.create(file=("in.jsonl", jsonl(1)), purpose="batch")
    async with httpx.AsyncClient() as h:
        r = await h.post(f"{gw_batch.url}/admin/keys", json={"name": "other"},
                         headers={"authorization": f"Bearer {MASTER}"})
    other = client(gw_batch, r.json()["key"])
    with pytest.raises(openai.NotFoundError):
        await other.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        await other.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")


async def test_a_batch_that_cannot_fit_a_budget_is_refused_up_front(
        gw_batch: GatewayHandle, fresh_sim: SimHandle) -> None:
    secret, _ = create_key(gw_batch.url, MASTER, budgets=[{"usd": 0.01, "period": "day"}])
    c = client(gw_batch, secret)
    f = await c.files.create(file=("in.jsonl", jsonl(100, max_tokens=1000)), purpose="batch")
    with pytest.raises(openai.RateLimitError) as e:
        await c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    assert "daily dollar budget of key" in e.value.message
    assert "over its 100 lines" in e.value.message
    assert (await c.batches.list()).data == []  # nothing was made, nothing sent
    assert fresh_sim.stats()["requests"] == 0


async def test_cancelling_half_way_releases_exactly_what_was_not_spent(
        gw_batch: GatewayHandle, fresh_sim: SimHandle) -> None:
    fresh_sim.config(ttft_ms=20)
    budget = 1.0
    secret, _ = create_key(gw_batch.url, MASTER, budgets=[{"usd": budget, "period": "day"}])
    c = client(gw_batch, secret)
    b = await submit(c, jsonl(300, max_tokens=200))
    await until_done(c, b.id, 16)
    cancelled = await c.batches.cancel(b.id)
    assert cancelled.status in ("cancelling", "cancelled")
    b = await done(c, b.id)
    assert b.status == "cancelled" and 16 <= b.request_counts.completed < 300
    errors = [orjson.loads(x)
              for x in (await c.files.content(b.error_file_id)).content.splitlines()]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert b.request_counts.completed + len(errors) == 300
    rows = batch_rows(gw_batch, b.id)
    assert len(rows) == b.request_counts.completed == fresh_sim.stats()["requests"]
    spent = sum(r["cost_usd"] for r in rows)
    assert b.model_extra is not None and b.model_extra["tollway"]["cost_usd"] == (
        pytest.approx(spent, rel=1e-9))
    # The budget now holds exactly what the answered lines cost: an embedding (held at
    # its exact cost) sees the rest left.
    raw = await c.embeddings.with_raw_response.create(model="text-embedding-3-small",
                                                      input="how much is left?")
    [emb] = [r for r in ledger_rows(gw_batch.url, MASTER)
             if r["request_id"] == raw.headers["x-request-id"]]
    assert float(raw.headers["x-tollway-budget-remaining-usd"]) == pytest.approx(
        budget - spent - emb["cost_usd"], abs=1e-9)


async def test_a_restart_mid_batch_answers_every_line_once(sim: SimHandle,
                                                           fresh_sim: SimHandle) -> None:
    fresh_sim.config(ttft_ms=20)
    first = start_gateway(config(sim))
    c = client(first)
    b = await submit(c, jsonl(1000))
    await until_done(c, b.id, 100)
    first.stop()  # SIGTERM: the lines in flight finish, the rest wait in the store
    stopped = fresh_sim.stats()["requests"]
    assert stopped < 1000
    again = start_gateway(config(sim), workdir=first.workdir)
    try:
        c = client(again)
        b = await done(c, b.id)
        assert (b.status, b.request_counts.completed) == ("completed", 1000)
        content = (await c.files.content(b.output_file_id)).content
        out = [orjson.loads(x) for x in content.splitlines()]
        assert [r["custom_id"] for r in out] == [f"req-{i}" for i in range(1000)]
        assert fresh_sim.stats()["requests"] == 1000  # none sent twice
        rows = batch_rows(again, b.id)
        assert len(rows) == len({r["id"] for r in rows}) == 1000  # none billed twice
    finally:
        again.stop()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with scratch_database("tollway_batches") as name:
        yield url_of(name)


async def test_two_replicas_share_one_batch_without_a_line_done_twice(
        sim: SimHandle, fresh_sim: SimHandle, postgres_url: str) -> None:
    fresh_sim.config(ttft_ms=20)
    cfg = config(sim, store={"redis_url": "redis://127.0.0.1:6379/8",
                             "postgres_url": postgres_url})
    with fleet_of(cfg, 2) as (a, b_replica):
        c = client(a)
        b = await done(c, (await submit(c, jsonl(400))).id)
        assert (b.status, b.request_counts.completed) == ("completed", 400)
        assert fresh_sim.stats()["requests"] == 400
        # Each replica writes its rows to the shared ledger in the background.
        deadline = time.monotonic() + 30
        while len(rows := batch_rows(b_replica, b.id)) < 400:
            assert time.monotonic() < deadline, f"{len(rows)} of 400 rows in the ledger"
            await asyncio.sleep(0.2)  # polling the admin API: nothing to await
        assert len(rows) == len({r["id"] for r in rows}) == 400
        # Both replicas answered lines (each counts what it served), none twice.
        served = [requests_served(g) for g in (a, b_replica)]
        assert sum(served) == 400 and min(served) > 0, served
        conn = await asyncpg.connect(postgres_url)
        try:
            twice = await conn.fetchval(
                "SELECT count(*) FROM batch_lines WHERE batch_id = $1 AND attempts > 1", b.id)
        finally:
            await conn.close()
        assert twice == 0


def requests_served(gw: GatewayHandle) -> int:
    """The requests a gateway has answered, by its own /metrics."""
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in gw.metrics().splitlines()
               if line.startswith("tollway_requests_total{"))


def test_the_cli_submits_and_waits_with_what_it_cost(gw_batch: GatewayHandle,
                                                     fresh_sim: SimHandle,
                                                     tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "results.jsonl"
    src.write_bytes(jsonl(50))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLWAY_", "OPENAI_"))}
    done_ = subprocess.run(
        [sys.executable, "-m", "tollway.cli", "batch", "submit", str(src), "--wait",
         "--out", str(out), "--base-url", gw_batch.url, "--api-key", MASTER],
        capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done_.returncode == 0, done_.stderr
    assert "50/50" in done_.stderr and "$" in done_.stderr
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [x["custom_id"] for x in lines] == [f"req-{i}" for i in range(50)]
    assert fresh_sim.stats()["requests"] == 50


@pytest.fixture(scope="module")
def gw_upstream(sim: SimHandle) -> Iterator[GatewayHandle]:
    """A deployment whose batch lines go to the provider's own batch API."""
    cfg = config(sim, server={"batch_poll_seconds": 0.05})
    for name in ("gpt-4o-mini", "text-embedding-3-small"):
        cfg["models"][name]["deployments"][0]["batches"] = "upstream"
    handle = start_gateway(cfg)
    try:
        yield handle
    finally:
        handle.stop()


async def test_a_thousand_lines_through_the_providers_batch_api_at_its_price(
        gw_upstream: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(gw_upstream)
    b = await done(c, (await submit(c, jsonl(1000))).id)
    assert (b.status, b.request_counts.completed, b.request_counts.failed) == (
        "completed", 1000, 0)
    out = [orjson.loads(x) for x in (await c.files.content(b.output_file_id)).content
           .splitlines()]
    assert [r["custom_id"] for r in out] == [f"req-{i}" for i in range(1000)]
    assert out[3]["response"]["body"]["choices"][0]["message"]["content"]
    # One provider batch of 1,000 lines; nothing sent as an interactive request.
    stats = fresh_sim.stats()
    assert stats["requests"] == 0
    assert (stats["batches"]["created"], stats["batches"]["lines"]) == (1, 1000)
    # Every line's row priced at the batch rates: half gpt-4o-mini's interactive price.
    rows = batch_rows(gw_upstream, b.id)
    assert len(rows) == 1000
    for r in rows:
        assert r["cost_usd"] == pytest.approx(
            (r["input_tokens"] * 0.075 + r["output_tokens"] * 0.30) / 1e6, rel=1e-9)
    used = stats["batch_by_model"]["gpt-4o-mini"]
    assert sum(r["input_tokens"] for r in rows) == used["prompt_tokens"]
    assert sum(r["output_tokens"] for r in rows) == used["completion_tokens"]


async def test_an_upstream_without_a_batch_api_gets_the_lines_one_by_one(
        gw_upstream: GatewayHandle, fresh_sim: SimHandle) -> None:
    fresh_sim.config(batches=False)  # a compatible server: no /files, no /batches
    try:
        c = client(gw_upstream)
        b = await done(c, (await submit(c, jsonl(20))).id)
        assert (b.status, b.request_counts.completed) == ("completed", 20)
        assert fresh_sim.stats()["requests"] == 20
        rows = batch_rows(gw_upstream, b.id)
        assert all(r["cost_usd"] == pytest.approx(
            (r["input_tokens"] * 0.15 + r["output_tokens"] * 0.60) / 1e6, rel=1e-9)
            for r in rows) and len(rows) == 20
    finally:
        fresh_sim.config(batches=True)


async def test_lines_for_an_anthropic_model_go_through_its_message_batches(
        sim: SimHandle, fresh_sim: SimHandle) -> None:
    cfg = config(sim, server={"batch_poll_seconds": 0.05})
    cfg["models"]["claude"] = {"deployments": [
        {"provider": "anthropic", "model": "claude-haiku-4-5", "api_base": sim.anthropic_base,
         "api_key": "k", "batches": "upstream"}]}
    gw = start_gateway(cfg)
    try:
        c = client(gw)
        b = await done(c, (await submit(c, jsonl(200, model="claude", max_tokens=64))).id)
        assert (b.status, b.request_counts.completed) == ("completed", 200)
        out = [orjson.loads(x) for x in (await c.files.content(b.output_file_id)).content
               .splitlines()]
        assert out[5]["response"]["body"]["object"] == "chat.completion"  # as asked
        stats = fresh_sim.stats()
        assert stats["requests"] == 0 and stats["batches"]["lines"] == 200
        rows = batch_rows(gw, b.id)
        assert len(rows) == 200 and {r["provider"] for r in rows} == {"anthropic"}
        for r in rows:  # claude-haiku-4-5 at its batch rates: $0.50 / $2.50 per million
            assert r["cost_usd"] == pytest.approx(
                (r["input_tokens"] * 0.50 + r["output_tokens"] * 2.50) / 1e6, rel=1e-9)
    finally:
        gw.stop()


@pytest.mark.parametrize(("url", "model", "body", "answer"), [
    ("/v1/embeddings", "text-embedding-3-small", {"input": "hello there"}, "list"),
    ("/v1/responses", "gpt-4o-mini", {"input": "hello there"}, "response"),
])
async def test_embeddings_and_responses_lines(gw_batch: GatewayHandle, fresh_sim: SimHandle,
                                              url: str, model: str, body: dict[str, Any],
                                              answer: str) -> None:
    c = client(gw_batch)
    content = b"".join(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": url,
                                     "body": {"model": model, **body}}) + b"\n"
                       for i in range(5))
    f = await c.files.create(file=("in.jsonl", content), purpose="batch")
    b = await done(c, (await c.batches.create(input_file_id=f.id, endpoint=url,  # type: ignore[arg-type]
                                              completion_window="24h")).id)
    assert (b.status, b.request_counts.completed) == ("completed", 5)
    out = [orjson.loads(x) for x in (await c.files.content(b.output_file_id)).content
           .splitlines()]
    assert {r["response"]["body"]["object"] for r in out} == {answer}
    assert {r["kind"] for r in batch_rows(gw_batch, b.id)} == {
        "embeddings" if url == "/v1/embeddings" else "chat"}
    # A file is the uploader's to delete; gone, it is not found.
    assert (await c.files.delete(f.id)).deleted
    with pytest.raises(openai.NotFoundError):
        await c.files.retrieve(f.id)
