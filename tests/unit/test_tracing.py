"""tracing.py: off unless OTEL_* variables ask (and OTEL_SDK_DISABLED wins), a clear
warning when asked without the packages; attempt spans and their reasons, no span
without a request around it, none at all when off; a stream's finish reasons."""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import AsyncGenerator, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.unit.fakes import FakeProvider, request
from tollway import tracing
from tollway.accounting.rows import LedgerRow
from tollway.accounting.settlement import Releases
from tollway.config import BreakerConfig, PacingConfig, RetryConfig
from tollway.observe import Observer
from tollway.providers.base import error_from_status
from tollway.routing.router import Attempts, Pool, Router
from tollway.types import Deployment


@pytest.mark.parametrize(("env", "exporters"), [
    ({}, []),  # the default: off
    ({"OTEL_SERVICE_NAME": "gw"}, []),  # naming the service asks for nothing
    ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
    ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
])
def test_tracing_is_off_unless_the_environment_asks(env: dict[str, str],
                                                    exporters: list[str]) -> None:
    assert tracing.asked(env) == exporters


def test_nothing_asked_nothing_started() -> None:
    assert tracing.start({}) is False and tracing.ON is False


def test_asked_without_the_packages_it_says_so_and_serves_untraced(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # not installed
    with caplog.at_level(logging.WARNING, "tollway"):
        assert tracing.start({"OTEL_TRACES_EXPORTER": "otlp"}) is False
    assert tracing.ON is False
    assert "OTEL_TRACES_EXPORTER=otlp asks for traces, but OpenTelemetry is not installed " \
           "(pip install 'tollway[otel]')" in caplog.text


def test_an_unsupported_exporter_or_protocol_is_named(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "tollway"):
        assert tracing.start({"OTEL_TRACES_EXPORTER": "zipkin"}) is False
        assert tracing.start({"OTEL_TRACES_EXPORTER": "otlp",
                              "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is False
    assert "OTEL_TRACES_EXPORTER=zipkin is not supported (otlp, console)" in caplog.text
    assert "OTLP protocol grpc is not supported (only http/protobuf)" in caplog.text
    assert tracing.ON is False


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.stop()


def dep(model: str, base: str) -> Deployment:
    return Deployment(provider="fake", model=model, api_base=base)


async def send_via(first: Deployment, second: Deployment, fallback: Deployment) -> Router:
    """`first` fails with 503 (retryable): the pool's `second` answers."""
    r = Router({"fake": FakeProvider(fail={first: error_from_status(
        503, b'{"error": {"message": "busy"}}', {}, first)})}, rng=random.Random(7))
    for d in (first, second, fallback):
        r.add(d, BreakerConfig(), PacingConfig(), None)
    chain = [Pool("a", [first, second], RetryConfig(budget=0.0, budget_floor=0.0)),
             Pool("b", [fallback], RetryConfig())]
    await r.send(request("hi"), chain, Attempts(), 100, Releases())
    return r


async def test_each_attempt_is_a_client_span_saying_why(spans: InMemorySpanExporter) -> None:
    first, second = dep("m", "http://one:8000/v1"), dep("m", "http://two/v1")
    assert tracing._tracer is not None
    with tracing._tracer.start_as_current_span("request"):
        await send_via(first, second, dep("f", "http://three/v1"))
    *attempts, parent = spans.get_finished_spans()
    assert parent.name == "request"
    assert [s.name for s in attempts] == ["chat m", "chat m"]
    assert all(s.kind is SpanKind.CLIENT and s.parent is not None
               and s.parent.span_id == parent.context.span_id for s in attempts)
    failed, answered = (s.attributes or {} for s in attempts)
    assert failed["server.address"] == "one" and answered["server.address"] == "two"
    assert (failed["tollway.attempt"], failed["tollway.attempt.reason"]) == (1, "first")
    assert (answered["tollway.attempt"], answered["tollway.attempt.reason"]) == (
        2, "next_deployment")
    assert failed["tollway.attempt.outcome"] == "failed"
    assert failed["http.response.status_code"] == 503
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert str(answered["tollway.attempt.after"]).startswith("upstream_error 503:")
    assert answered["tollway.attempt.outcome"] == "answered"


async def test_a_paced_deployments_wait_is_a_span_of_its_attempt(
        spans: InMemorySpanExporter) -> None:
    d = dep("m", "http://one/v1")
    r = Router({"fake": FakeProvider()}, rng=random.Random(7))
    r.add(d, BreakerConfig(), PacingConfig(rpm=600), None)
    assert tracing._tracer is not None
    with tracing._tracer.start_as_current_span("request"):
        await r.send(request("hi"), [Pool("a", [d], RetryConfig())], Attempts(), 42,
                     Releases())
    pacing, attempt, _ = spans.get_finished_spans()
    assert pacing.name == "tollway.pacing" and (pacing.attributes or {})["tollway.tokens"] == 42
    assert pacing.parent is not None and pacing.parent.span_id == attempt.context.span_id


async def test_no_span_without_a_request_around_it(spans: InMemorySpanExporter) -> None:
    """A call nobody's request made (a background task's) is not a root of its own."""
    await send_via(dep("m", "http://one/v1"), dep("m", "http://two/v1"), dep("f", "http://t"))
    assert spans.get_finished_spans() == ()


async def test_with_tracing_off_nothing_is_made() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("an application's request"):
        assert tracing.ON is False
        await send_via(dep("m", "http://one/v1"), dep("m", "http://two/v1"),
                       dep("f", "http://t"))
    assert [s.name for s in exporter.get_finished_spans()] == ["an application's request"]


async def test_a_streams_finish_reasons_are_noted_as_it_goes_by(
        spans: InMemorySpanExporter) -> None:
    async def frames() -> AsyncGenerator[bytes, None]:
        # a quote in generated text is escaped: not a key
        yield b'data: {"choices":[{"delta":{"content":"\\"finish_reason\\": \\"x\\""}}]}\n\n'
        yield (b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
               b'data: {"choices":[{"index":1,"delta":{},"finish_reason": "length"}]}\n\n')

    t = tracing.begin([(b"traceparent", b"00-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-01")],
                      "POST", "/v1/chat/completions", "req-1")
    try:
        got = [f async for f in tracing.finish_reasons(frames(), t)]
    finally:
        tracing.end(t)
    assert len(got) == 2 and t.finish_reasons == ["stop", "length"]
    assert t.trace_id == "ab" * 16  # the client's trace, continued
    [span] = spans.get_finished_spans()
    assert span.kind is SpanKind.SERVER and span.parent is not None
    assert format(span.parent.span_id, "016x") == "cd" * 8


def test_the_access_log_line_carries_the_trace_id() -> None:
    import io

    log = io.BytesIO()
    observer = Observer()
    observer.log_to(log)
    row = LedgerRow(id="row_1", request_id="r", ts=0.0, status=200, outcome="ok")
    row.trace_id = "ab" * 16
    observer.request(row)
    assert b'"trace_id":"' + b"ab" * 16 + b'"' in log.getvalue()


@pytest.mark.parametrize(("status", "error", "span_status"), [
    (200, None, StatusCode.UNSET),
    (429, "budget_exceeded", StatusCode.UNSET),  # a refusal: the caller's, not ours
    (502, "upstream_error", StatusCode.ERROR),
])
def test_a_request_span_says_what_its_ledger_row_says(
        spans: InMemorySpanExporter, status: int, error: str | None,
        span_status: StatusCode) -> None:
    t = tracing.begin([], "POST", "/v1/embeddings", "req-2")
    row = LedgerRow(id="row_2", request_id="req-2", ts=0.0, status=status, outcome="x",
                    model_asked="emb", model="text-embedding-3-small", provider="openai",
                    input_tokens=7, cost_usd=0.5, error=error)
    row.kind = "embeddings"
    tracing.describe(t, row, None)
    tracing.end(t)
    [span] = spans.get_finished_spans()
    attrs = span.attributes or {}
    assert span.name == "embeddings emb" and span.status.status_code is span_status
    assert (attrs["gen_ai.operation.name"], attrs["gen_ai.request.model"],
            attrs["gen_ai.response.model"], attrs["gen_ai.provider.name"]) == (
        "embeddings", "emb", "text-embedding-3-small", "openai")
    assert (attrs["gen_ai.usage.input_tokens"], attrs["tollway.cost_usd"]) == (7, 0.5)
    assert attrs.get("error.type") == error and "gen_ai.response.finish_reasons" not in attrs
