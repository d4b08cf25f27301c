"""An OTLP/HTTP trace receiver in the test process: a gateway subprocess exports its
spans here (OTEL_EXPORTER_OTLP_ENDPOINT), decoded with opentelemetry-proto, and a test
awaits the spans of one trace.

    async with Collector() as spans:
        env = spans.env()                 # for start_gateway(env=...)
        got = await spans.trace(trace_id, lambda s: any(x.root for x in s))
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.helpers.gateway import free_port

SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_ERROR = 2


@dataclass
class Span:
    trace_id: str  # hex
    span_id: str
    parent_id: str  # "" for a root
    name: str
    kind: int
    attrs: dict[str, Any]
    status: int  # 0 unset, 1 ok, 2 error
    service: str
    start_ns: int
    children: list[Span] = field(default_factory=list)

    def child(self, name: str) -> Span:
        found = [c for c in self.children if c.name == name]
        assert len(found) == 1, (name, [c.name for c in self.children])
        return found[0]


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind is not None else None


class Collector:
    """POST /v1/traces on a free port, every span kept."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[Span] = []
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def env(self) -> dict[str, str]:
        """A gateway's environment to export here, at once (not every 5 s)."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
                "OTEL_SERVICE_NAME": "tollway-under-test", "OTEL_BSP_SCHEDULE_DELAY": "20"}

    async def __aenter__(self) -> Collector:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        got = ExportTraceServiceRequest.FromString(body)
        for rs in got.resource_spans:
            res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(Span(
                        s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
                        s.kind, {kv.key: _value(kv.value) for kv in s.attributes},
                        s.status.code, str(res.get("service.name")), s.start_time_unix_nano))
        self._arrived.set()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def trace(self, trace_id: str, done: Callable[[list[Span]], bool]) -> list[Span]:
        """The spans of `trace_id` once `done` says they are all in (each export
        wakes the wait; 10 s at most), with their children linked, in start order."""
        async with asyncio.timeout(10):
            while True:
                spans = sorted((s for s in self.spans if s.trace_id == trace_id),
                               key=lambda s: s.start_ns)
                if done(spans):
                    break
                self._arrived.clear()
                await self._arrived.wait()
        by_id = {s.span_id: s for s in spans}
        for s in spans:
            s.children = []
        for s in spans:
            if s.parent_id in by_id:
                by_id[s.parent_id].children.append(s)
        return spans

    def servers(self) -> list[Span]:
        """The request spans received so far."""
        return [s for s in self.spans if s.kind == SERVER]
