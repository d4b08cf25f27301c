"""Issue 23 (OpenTelemetry): a gateway process asked for traces by the standard OTEL_*
variables exports a span per request to an OTLP/HTTP receiver in this process — its
steps and each upstream attempt as children, with the GenAI semantic conventions'
attributes — keeps the trace id in the ledger row, continues a client's W3C
traceparent and passes it to the upstream. On the shared store (PostgreSQL, Redis),
so the ledger's new column and the store calls' spans are the real ones."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.helpers.admin import create_key, ledger_rows
from tests.helpers.clients import openai_client
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.otlp import CLIENT, SERVER, STATUS_ERROR, Collector, Span
from tests.helpers.postgres import scratch_database, url_of
from tests.helpers.sim import SimHandle, start_simulator

MASTER = "master-" + os.urandom(8).hex()
REDIS_DB = "redis://127.0.0.1:6379/11"  # a database of its own, flushed around the module
MESSAGES: Any = [{"role": "user", "content": "hello"}]
QUIET = {"rate_429": 0, "rate_500": 0, "next_faults": [], "retry_after": 1, "ttft_ms": 0,
         "token_ms": 0, "output_tokens": 16}


@pytest.fixture(scope="module")
def upstream_a() -> Iterator[SimHandle]:
    with start_simulator() as s:
        yield s


@pytest.fixture(scope="module")
def upstream_b() -> Iterator[SimHandle]:
    with start_simulator() as s:
        yield s


@pytest.fixture(scope="module")
async def collector() -> AsyncIterator[Collector]:
    async with Collector() as c:
        yield c


async def _flush_redis() -> None:
    r = aioredis.from_url(REDIS_DB)
    await r.flushdb()
    await r.aclose()


@pytest.fixture(scope="module")
def tgw(upstream_a: SimHandle, upstream_b: SimHandle, collector: Collector
        ) -> Iterator[GatewayHandle]:
    def dep(sim: SimHandle, model: str) -> dict[str, Any]:
        return {"provider": "openai", "model": model, "api_base": sim.openai_base,
                "api_key": "k"}

    asyncio.run(_flush_redis())
    with scratch_database("tollway_tracing") as name:
        config = {
            "store": {"redis_url": REDIS_DB, "postgres_url": url_of(name)},
            "routing": {"retry": {"max_attempts": 3, "max_seconds": 10, "base_delay": 0.01,
                                  "max_delay": 0.05},
                        "breaker": {"min_requests": 100_000}},
            "models": {"a": {"deployments": [dep(upstream_a, "a-model")], "fallbacks": ["b"]},
                       "b": {"deployments": [dep(upstream_b, "b-model")]}},
            "prices": {"a-model": {"input": 1.0, "output": 2.0},
                       "b-model": {"input": 1.0, "output": 2.0}},
            "rate_limits": {"models": {"a": {"rpm": 1000}}},
            "budgets": {"global": [{"usd": 100, "period": "day"}]},
        }
        handle = start_gateway(config, env={"TOLLWAY_MASTER_KEY": MASTER, **collector.env()})
        try:
            yield handle
        finally:
            handle.stop()
            asyncio.run(_flush_redis())


@pytest.fixture
def sims(upstream_a: SimHandle, upstream_b: SimHandle) -> tuple[SimHandle, SimHandle]:
    for s in (upstream_a, upstream_b):
        s.reset()
        s.config(**QUIET)
    return upstream_a, upstream_b


async def row_of(gw: GatewayHandle, rid: str) -> dict[str, Any]:
    """The request's ledger row, once the gateway's writer has put it in PostgreSQL
    (another process: there is no event to await)."""
    deadline = time.monotonic() + 5
    while True:
        rows = [r for r in ledger_rows(gw.url, MASTER) if r["request_id"] == rid]
        if rows or time.monotonic() > deadline:
            assert len(rows) == 1
            return rows[0]
        await asyncio.sleep(0.05)


def parent_of(headers: dict[str, str]) -> tuple[str, str]:
    """The trace and the parent span a request's W3C traceparent names (sampled)."""
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled: the provider may trace too
    return trace_id, span_id


def has_request_span(spans: list[Span]) -> bool:
    return any(s.kind == SERVER for s in spans)


async def stream(gw: GatewayHandle, key: str, rid: str, headers: dict[str, str] | None = None
                 ) -> str:
    """A streamed chat request through the openai SDK: its text."""
    c = openai_client(gw.base_url, key)
    got = await c.chat.completions.create(
        model="a", messages=MESSAGES, max_tokens=64, stream=True,
        extra_headers={"x-request-id": rid, **(headers or {})})
    return "".join([chunk.choices[0].delta.content or "" async for chunk in got
                    if chunk.choices])


async def test_a_streamed_request_that_retried_and_fell_back_is_one_trace(
        tgw: GatewayHandle, sims: tuple[SimHandle, SimHandle], collector: Collector) -> None:
    """A answers 429 with a Retry-After longer than the alias waits (so it is not
    called again), its fallback B a 500, then B, retried after its backoff, answers:
    three upstream attempt spans under the request's, each saying why it was made."""
    a, b = sims
    a.config(next_faults=["429"], retry_after=100)
    b.config(next_faults=["500"])
    key, record = create_key(tgw.url, MASTER, name="traced")
    rid = "trace-" + os.urandom(4).hex()
    assert await stream(tgw, key, rid)
    row = await row_of(tgw, rid)
    assert row["outcome"] == "ok" and row["model"] == "b-model" and row["retries"] == 2
    trace_id = row["trace_id"]
    assert len(trace_id) == 32 and int(trace_id, 16)

    spans = await collector.trace(trace_id, has_request_span)
    [root] = [s for s in spans if s.kind == SERVER]
    assert root.parent_id == "" and root.service == "tollway-under-test"
    assert root.name == "chat a" and root.status != STATUS_ERROR
    attrs = root.attrs
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "a" and attrs["gen_ai.response.model"] == "b-model"
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.usage.input_tokens"] == row["input_tokens"] > 0
    assert attrs["gen_ai.usage.output_tokens"] == row["output_tokens"] == 16
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["tollway.cost_usd"] == pytest.approx(row["cost_usd"]) and row["cost_usd"] > 0
    assert attrs["tollway.retries"] == 2 and attrs["tollway.fallback_from"] == "a-model"
    assert attrs["tollway.key_id"] == record["id"] and attrs["tollway.request_id"] == rid
    assert attrs["http.response.status_code"] == 200 and attrs["tollway.stream"] is True

    # The steps, in order: the key checked (in the key store), the input guards, the
    # rate limit and the budget hold taken, three attempts, what they took given back.
    names = [c.name for c in root.children]
    assert names == ["tollway.auth", "tollway.guards.input", "tollway.admission",
                     "chat a-model", "chat b-model", "chat b-model", "tollway.settle"], names
    assert [c.name for c in root.child("tollway.auth").children] == ["tollway.store.keys"]
    assert {c.name for c in root.child("tollway.admission").children} == {
        "tollway.store.limits", "tollway.store.budgets"}

    first, fallback, retry = (c for c in root.children if c.kind == CLIENT)
    assert [s.attrs["tollway.attempt"] for s in (first, fallback, retry)] == [1, 2, 3]
    assert first.attrs["tollway.attempt.reason"] == "first"
    assert first.attrs["gen_ai.request.model"] == "a-model" and first.attrs["tollway.alias"] == "a"
    assert first.attrs["tollway.attempt.outcome"] == "failed" and first.status == STATUS_ERROR
    assert first.attrs["http.response.status_code"] == 429
    assert first.attrs["error.type"] == "rate_limit_error"

    assert fallback.attrs["tollway.attempt.reason"] == "fallback"
    assert fallback.attrs["tollway.alias"] == "b"
    assert fallback.attrs["tollway.attempt.after"].startswith("rate_limit_error 429:")
    assert fallback.attrs["http.response.status_code"] == 500
    assert fallback.status == STATUS_ERROR

    assert retry.attrs["tollway.attempt.reason"] == "retry"
    assert retry.attrs["tollway.attempt.after"].startswith("upstream_error 500:")
    assert retry.attrs["tollway.attempt.outcome"] == "answered"
    assert retry.status != STATUS_ERROR and retry.attrs["server.address"] == "127.0.0.1"

    # Each upstream call carried its attempt's span as the parent of whatever the
    # provider traces.
    sent = [parent_of(r["headers"]) for r in b.stats()["recent_requests"]]
    assert sent == [(trace_id, fallback.span_id), (trace_id, retry.span_id)]
    [to_a] = [parent_of(r["headers"]) for r in a.stats()["recent_requests"]]
    assert to_a == (trace_id, first.span_id)


async def test_a_clients_traceparent_is_continued_and_passed_upstream(
        tgw: GatewayHandle, sims: tuple[SimHandle, SimHandle], collector: Collector) -> None:
    a, _ = sims
    trace_id, parent = os.urandom(16).hex(), os.urandom(8).hex()
    rid = "traceparent-" + os.urandom(4).hex()
    assert await stream(tgw, MASTER, rid, {"traceparent": f"00-{trace_id}-{parent}-01",
                                            "tracestate": "vendor=opaque"})
    row = await row_of(tgw, rid)
    assert row["trace_id"] == trace_id and row["model"] == "a-model"

    spans = await collector.trace(trace_id, has_request_span)
    [root] = [s for s in spans if s.kind == SERVER]
    assert root.parent_id == parent  # the client's span is the request span's parent
    [attempt] = [c for c in root.children if c.kind == CLIENT]
    assert attempt.kind == CLIENT and attempt.attrs["tollway.attempt.reason"] == "first"
    [sent] = [r["headers"] for r in a.stats()["recent_requests"]]
    assert parent_of(sent) == (trace_id, attempt.span_id)
    assert sent["tracestate"] == "vendor=opaque"
