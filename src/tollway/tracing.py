"""OpenTelemetry traces of the request path: off unless the environment asks.

Asked for with the standard variables — `OTEL_TRACES_EXPORTER` (`otlp`, `console`) or
an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`);
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps it off whatever else is
set. The SDK reads the rest itself (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, the exporter's headers and timeout). The
OpenTelemetry packages are an optional extra (`tollway[otel]`): without them a gateway
asked for traces says so once and serves untraced.

One switch for the process (`ON`): with it off, each instrumented point of the request
path costs one boolean check and makes no span. With it on, a chat or embeddings
request gets a SERVER span at the edge (continuing the client's W3C `traceparent`),
ended after its ledger row; the steps below add children only under a recording span
(`traced`), so the ledger writer's background flushes make no root spans. Spans nest
through the contextvars OpenTelemetry keeps: a request runs in one task, from its edge
to its `finish`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from tollway.accounting.rows import LedgerRow
from tollway.errors import TollwayError
from tollway.types import Answer, Deployment

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("tollway")
T = TypeVar("T")

ON = False  # the process's switch: read on the request path, set only by `start`
_tracer: Tracer | None = None
_provider: TracerProvider | None = None

EXPORTERS = ("otlp", "console")
HTTP_PROTOBUF = "http/protobuf"


# -- start and stop --------------------------------------------------------------------


def asked(env: Mapping[str, str]) -> list[str]:
    """The span exporters the environment asks for; none leaves tracing off (the
    default: an operator who set no OTEL_* variable gets no traces, and no cost)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")
             if n.strip()]
    if "none" in names:
        return []
    if not names and (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                      or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        names = ["otlp"]
    return list(dict.fromkeys(names))


def start(env: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on if the environment asks for it (once per process; each worker
    process starts its own, after the fork). Whether this call turned it on (so its
    caller is the one to `stop` it)."""
    if _provider is not None:
        return False
    env = os.environ if env is None else env
    names = asked(env)
    if not names:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("tracing: %s asks for traces, but OpenTelemetry is not installed "
                    "(pip install 'tollway[otel]'); serving without traces",
                    _which(env))
        return False
    exporters = [e for e in (_exporter(n, env) for n in names) if e is not None]
    if not exporters:
        return False
    from tollway.version import __version__

    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "tollway"}))
    provider = TracerProvider(resource=resource)  # its sampler: OTEL_TRACES_SAMPLER
    for exporter in exporters:  # batched: exporting is never on the request's time
        provider.add_span_processor(BatchSpanProcessor(exporter))
    use(provider)
    log.info("tracing: on, exporting to %s", ", ".join(names))
    return True


def use(provider: TracerProvider) -> None:
    """Trace with `provider` (an SDK TracerProvider with its own processors: a test's
    in-memory exporter, or an application that embeds the gateway)."""
    global ON, _tracer, _provider
    from tollway.version import __version__

    _provider, _tracer = provider, provider.get_tracer("tollway", __version__)
    ON = True


def stop() -> None:
    """Export what is buffered and turn tracing off (the gateway's close)."""
    global ON, _tracer, _provider
    provider, _provider, _tracer, ON = _provider, None, None, False
    if provider is not None:
        provider.shutdown()


def _which(env: Mapping[str, str]) -> str:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if env.get(name):
            return f"{name}={env[name]}"
    return "the environment"


def _exporter(name: str, env: Mapping[str, str]) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        log.warning("tracing: OTEL_TRACES_EXPORTER=%s is not supported (%s); ignored",
                    name, ", ".join(EXPORTERS))
        return None
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or HTTP_PROTOBUF).strip()
    if protocol != HTTP_PROTOBUF:
        log.warning("tracing: OTLP protocol %s is not supported (only %s); no OTLP export",
                    protocol, HTTP_PROTOBUF)
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning("tracing: the OTLP exporter is not installed (pip install "
                    "'tollway[otel]'); no OTLP export")
        return None
    return OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*


# -- a request's span ------------------------------------------------------------------


class Traced:
    """A request's span, made at the edge (`begin`) and ended there after its ledger
    row (`end`); `trace_id` is what the ledger row and the access log carry."""

    __slots__ = ("finish_reasons", "span", "token", "trace_id")

    def __init__(self, span: Span, token: object, trace_id: str) -> None:
        self.span, self.token, self.trace_id = span, token, trace_id
        self.finish_reasons: list[str] = []  # a stream's, as its frames go by


def begin(headers: Iterable[tuple[bytes, bytes]], method: str, path: str,
          request_id: str) -> Traced:
    """The request's span, the current one until `end`: a child of the client's
    `traceparent` when it sent one."""
    from opentelemetry import context, propagate, trace

    assert _tracer is not None
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers
               if k in (b"traceparent", b"tracestate", b"baggage")}
    parent = propagate.extract(carrier) if carrier else None
    span = _tracer.start_span(f"{method} {path}", context=parent, kind=trace.SpanKind.SERVER,
                              attributes={"http.request.method": method, "url.path": path,
                                          "tollway.request_id": request_id})
    token = context.attach(trace.set_span_in_context(span, parent))
    return Traced(span, token, format(span.get_span_context().trace_id, "032x"))


def end(t: Traced) -> None:
    from opentelemetry import context

    t.span.end()
    context.detach(t.token)  # type: ignore[arg-type]


def describe(t: Traced, row: LedgerRow, answer: Answer | None) -> None:
    """The request's span, told what its ledger row says: the GenAI semantic
    conventions' attributes (gen_ai.*), its cost and what routing did (tollway.*)."""
    from opentelemetry.trace import StatusCode

    span, op = t.span, "embeddings" if row.kind == "embeddings" else "chat"
    span.update_name(f"{op} {row.model_asked or '-'}")
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": op,
        "gen_ai.usage.input_tokens": row.input_tokens,
        "gen_ai.usage.output_tokens": row.output_tokens,
        "http.response.status_code": row.status,
        "tollway.outcome": row.outcome,
        "tollway.cost_usd": row.cost_usd,
        "tollway.cost_estimated": row.estimated,
        "tollway.retries": row.retries,
        "tollway.stream": row.stream,
    }
    if row.model_asked:
        attrs["gen_ai.request.model"] = row.model_asked
    if row.model:
        attrs["gen_ai.response.model"] = row.model
    if row.provider:  # gen_ai.system: the name before semantic conventions 1.37
        attrs["gen_ai.provider.name"] = attrs["gen_ai.system"] = row.provider
    if row.cached_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = row.cached_tokens
    for name, value in (("tollway.fallback_from", row.fallback_from),
                        ("tollway.cache", row.cache), ("tollway.tier", row.tier),
                        ("tollway.key_id", row.key_id), ("tollway.batch_id", row.batch_id)):
        if value:
            attrs[name] = value
    reasons = t.finish_reasons or _reasons_of(answer)
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = reasons
    if row.error is not None:
        attrs["error.type"] = row.error
    span.set_attributes(attrs)
    if row.status >= 500:  # a refusal (4xx) is the caller's error, not the server's
        span.set_status(StatusCode.ERROR, row.error)


def _reasons_of(answer: Answer | None) -> list[str]:
    reply = answer.reply if answer is not None else None
    if reply is None:
        return []
    return [str(c["finish_reason"]) for c in reply.body.get("choices") or ()
            if isinstance(c, dict) and c.get("finish_reason")]


_FINISH = re.compile(rb'"finish_reason":\s*"([A-Za-z_]+)"')


async def finish_reasons(frames: AsyncGenerator[bytes, None], t: Traced
                         ) -> AsyncGenerator[bytes, None]:
    """A stream's frames as they are, noting each choice's finish_reason on the way
    (OpenAI SSE events; a quote in generated text is escaped, so only keys match)."""
    async for frame in frames:
        if b'"finish_reason":' in frame:
            t.finish_reasons += (m.decode() for m in _FINISH.findall(frame))
        yield frame


# -- the steps' spans ------------------------------------------------------------------


def span(name: str, attrs: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A child of the current span, current while it lasts; nothing without a
    recording span around it (a background task's store call is nobody's step)."""
    from opentelemetry import trace

    if _tracer is None or not trace.get_current_span().is_recording():
        return nullcontext()
    return _tracer.start_as_current_span(name, attributes=attrs)


async def traced(name: str, op: Awaitable[T], attrs: Mapping[str, Any] | None = None) -> T:
    """`await op` in a child span of its own: `await (traced("x", op) if tracing.ON
    else op)` keeps the untraced path to one check."""
    with span(name, attrs):
        return await op


def timed(name: str, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a child span of its own."""
    with span(name):
        return fn(*args)


def attempt(dep: Deployment, alias: str, number: int, reason: str,
            after: TollwayError | None, embeddings: bool) -> AbstractContextManager[Any]:
    """An upstream attempt's CLIENT span: which deployment, the how-many-th call, and
    why it was made — `first`, `next_deployment` (another of the pool), `fallback` (a
    fallback alias's pool), `retry` (one that failed before, after its backoff) — with
    the failure that moved the request on."""
    from opentelemetry import trace

    if _tracer is None or not trace.get_current_span().is_recording():
        return nullcontext()
    op = "embeddings" if embeddings else "chat"
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": op, "gen_ai.provider.name": dep.provider,
        "gen_ai.system": dep.provider, "gen_ai.request.model": dep.model,
        "tollway.alias": alias, "tollway.attempt": number, "tollway.attempt.reason": reason}
    if dep.api_base:
        host = _HOST.match(dep.api_base)
        if host is not None:
            attrs["server.address"] = host.group(1)
    if after is not None:
        attrs["tollway.attempt.after"] = summary(after)
    return _tracer.start_as_current_span(f"{op} {dep.model}", kind=trace.SpanKind.CLIENT,
                                         attributes=attrs)


_HOST = re.compile(r"^[a-z]+://([^/:]+)")


def attempted(s: Any, answer: Answer | None, failure: TollwayError | None) -> None:
    """What came of an attempt: answered, or the failure that moved the request on."""
    if s is None or not s.is_recording():
        return
    if answer is not None:
        s.set_attribute("tollway.attempt.outcome", "answered")
        return
    from opentelemetry.trace import StatusCode

    s.set_attribute("tollway.attempt.outcome", "failed")
    if failure is not None:
        s.set_attributes(_error_attrs(failure))
        s.set_status(StatusCode.ERROR, summary(failure))


def failed(s: Any, e: BaseException) -> None:
    """An attempt that raised: a client error that goes straight back (recorded by the
    span as it ends), or the caller gone."""
    if s is None or not s.is_recording():
        return
    if isinstance(e, TollwayError):
        s.set_attributes({"tollway.attempt.outcome": "error", **_error_attrs(e)})
    else:
        s.set_attribute("tollway.attempt.outcome", "cancelled")


def _error_attrs(e: TollwayError) -> dict[str, Any]:
    attrs: dict[str, Any] = {"error.type": e.type}
    if e.upstream_status is not None:
        attrs["http.response.status_code"] = e.upstream_status
    return attrs


def summary(e: TollwayError) -> str:
    """A failure in a few words: its type, the upstream's status, its message."""
    status = f" {e.upstream_status}" if e.upstream_status is not None else ""
    return f"{e.type}{status}: {e.message[:200]}"


# -- the upstream call ------------------------------------------------------------------


def outgoing(headers: dict[str, str]) -> dict[str, str]:
    """`headers` with the current span's context (`traceparent`, `tracestate`) for
    the upstream: a copy, since a deployment's headers are built once and shared."""
    from opentelemetry import propagate

    out = dict(headers)
    propagate.inject(out)
    return out
