"""HTTP routes. Each endpoint is a plain ASGI callable: parse at the edge (`wire/`),
hand the typed request to `Gateway.chat`, write the answer back as JSON or SSE."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.routing import Route, Router

from tollway import __version__
from tollway.accounting.prices import format_usd
from tollway.cache.controls import ask_of
from tollway.config import Config, ServerConfig
from tollway.conversation import history
from tollway.errors import MethodNotAllowed, NotFound, TollwayError
from tollway.gateway import Answer, Gateway, Settlement
from tollway.observe import UpstreamLevel
from tollway.policy import budget
from tollway.policy import limits as rate_limits
from tollway.providers import http
from tollway.providers.http import iter_chunks
from tollway.server.admin import ANY_METHOD, admin_routes
from tollway.server.asgi import (
    ClientGone,
    DisconnectWatch,
    Edge,
    Headers,
    Receive,
    Scope,
    Send,
    check_json_content_type,
    edge,
    json_bytes,
    read_body,
    send_error,
    send_json,
    send_sse,
)
from tollway.server.conversations import ConversationsEndpoint
from tollway.server.ready import readiness
from tollway.types import CallContext, ChatRequest, Reply, ReplyStream
from tollway.wire import anthropic as anthropic_wire
from tollway.wire import openai as openai_wire

log = logging.getLogger("tollway")


def answer_headers(ctx: CallContext, answer: Answer | None) -> Headers:
    h: Headers = [(b"x-request-id", ctx.request_id.encode())]
    if answer is not None:
        h.append((b"x-tollway-model", answer.model.encode()))
        h.append((b"x-tollway-provider", answer.deployment.provider.encode()))
        if answer.input_tokens is not None:
            h.append((b"x-tollway-input-tokens-estimated", str(answer.input_tokens).encode()))
        if answer.worst_case_usd is not None:
            h.append((b"x-tollway-max-cost-usd", format_usd(answer.worst_case_usd).encode()))
    if ctx.tier:
        h.append((b"x-tollway-tier", ctx.tier.encode()))
    if ctx.downgraded_from:
        h.append((b"x-tollway-downgraded-from", ctx.downgraded_from.encode()))
    if ctx.downgrade_reason:
        h.append((b"x-tollway-downgrade-reason", ctx.downgrade_reason.encode()))
    if ctx.max_tokens_clamped:
        h.append((b"x-tollway-max-tokens-clamped", ctx.max_tokens_clamped.encode()))
    if ctx.remaining_usd is not None:
        h.append((b"x-tollway-budget-remaining-usd", format_usd(ctx.remaining_usd).encode()))
    if ctx.ticket is not None:
        h += rate_limits.headers(ctx.ticket)
    if ctx.thread is not None:
        h.append((b"x-tollway-conversation", ctx.thread.id.encode()))
    if ctx.history is not None:
        h.append((b"x-tollway-history", ctx.history.policy.encode()))
        h.append((b"x-tollway-history-tokens", str(ctx.history.tokens).encode()))
        h.append((b"x-tollway-history-saved-tokens", str(ctx.history.saved_tokens).encode()))
    if ctx.cache is not None:
        h.append((b"x-tollway-cache", ctx.cache.encode()))
        look = answer.cache if answer is not None else None
        if look is not None and look.similarity is not None:
            h.append((b"x-tollway-cache-similarity", f"{look.similarity:.4f}".encode()))
    return h


def cost_headers(s: Settlement) -> Headers:
    h: Headers = [(b"x-tollway-cost-usd",
                   b"unpriced" if s.cost_usd is None else format_usd(s.cost_usd).encode())]
    if s.usage is not None:
        h.append((b"x-tollway-input-tokens", str(s.usage.prompt_tokens).encode()))
        h.append((b"x-tollway-output-tokens", str(s.usage.completion_tokens).encode()))
    if s.saved_usd:
        h.append((b"x-tollway-saved-usd", format_usd(s.saved_usd).encode()))
    return h


def cost_trailer(s: Settlement) -> bytes:
    """Headers are long gone when a stream ends: its cost travels as an SSE comment,
    which SDKs and browsers ignore and curl shows."""
    usd = "unpriced" if s.cost_usd is None else format_usd(s.cost_usd)
    tokens = (f" input_tokens={s.usage.prompt_tokens} output_tokens={s.usage.completion_tokens}"
              if s.usage is not None else "")
    flags = " estimated=true" if s.estimated else ""
    if s.saved_usd:
        flags += f" saved_usd={format_usd(s.saved_usd)}"
    return f": tollway cost_usd={usd}{tokens}{flags}\n\n".encode()


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one wire format reads a request and writes answers; the path is shared."""

    parse: Callable[[bytes, ServerConfig], ChatRequest]
    reply: Callable[[Reply], bytes]
    frames: Callable[[ReplyStream], AsyncGenerator[bytes, None]]
    stream_end: bytes
    stream_error: Callable[[TollwayError], bytes]  # an error after the stream began
    error: Callable[[TollwayError], bytes]


class ChatEndpoint:
    """POST a chat request in some dialect -> Gateway.chat -> JSON or SSE back.

    A watcher cancels this task when the client disconnects; the cancellation reaches
    the provider's stream, whose cleanup closes the upstream connection.
    """

    def __init__(self, app: TollwayApp, dialect: Dialect) -> None:
        self.app = app
        self.dialect = dialect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        e = edge(scope)
        client = scope.get("client")
        ctx = CallContext(request_id=e.request_id, tier_header=e.tier, api_key=e.api_key,
                          user=e.user, feature=e.feature, conversation=e.conversation,
                          stored_conversation=e.stored_conversation,
                          ip=client[0] if client else None)
        dialect = self.dialect
        gateway = self.app.gateway
        watch: DisconnectWatch | None = None
        req: ChatRequest | None = None
        answer: Answer | None = None
        error: TollwayError | None = None
        settlement: Settlement | None = None
        status: int | None = None
        try:
            await gateway.authenticate(ctx)
            ctx.cache_ask = ask_of(e.cache_control, e.cache_headers)
            ctx.history_ask = history.ask_of(e.history, e.history_tokens)
            check_json_content_type(scope)
            server = self.app.config.server
            req = dialect.parse(await read_body(scope, receive, server.max_body_bytes), server)
            watch = DisconnectWatch(receive)
            answer = await gateway.chat(req, ctx)
            headers = answer_headers(ctx, answer)
            if answer.stream is not None:
                done = answer  # bound for the closures below

                def end() -> bytes:
                    nonlocal settlement
                    settlement = gateway.settle(done)
                    return cost_trailer(settlement) + dialect.stream_end

                def failed(err: TollwayError) -> bytes:
                    nonlocal error
                    error = gateway.scrub(err)
                    return dialect.stream_error(error)

                await send_sse(send, dialect.frames(answer.stream), headers, end, failed)
            else:
                assert answer.reply is not None
                settlement = gateway.settle(answer)
                await send_json(send, 200, dialect.reply(answer.reply),
                                headers + cost_headers(settlement))
        except TollwayError as err:
            error = gateway.scrub(err)
            await send_json(send, err.status, dialect.error(err),
                            [*answer_headers(ctx, answer), *err.headers()])
        except ClientGone:
            status = 499
        except Exception:  # a bug: answer 500 in the OpenAI shape, still account for it
            log.exception("internal error (%s)", ctx.request_id)
            error = TollwayError(f"Internal error; the request id is {ctx.request_id}.")
            with contextlib.suppress(Exception):  # fails if the response had begun
                await send_json(send, 500, dialect.error(error), answer_headers(ctx, answer))
        except asyncio.CancelledError:
            status = 499
            if watch is None or not watch.gone:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            log.info("client went away; upstream call cancelled (%s)", ctx.request_id)
        finally:
            if watch is not None:
                watch.finish()
            # Exactly once, on every path: settle the budget hold, write the ledger row.
            await gateway.finish(ctx, req, answer, error, status=status, settlement=settlement)


def anthropic_frames(stream: ReplyStream) -> AsyncGenerator[bytes, None]:
    # The parsed request asks for usage, so the usage event reaches the translator
    # (Anthropic's message_delta carries it).
    return anthropic_wire.stream_to_anthropic(iter_chunks(stream.frames), stream.model)


OPENAI = Dialect(
    parse=lambda body, server: openai_wire.parse_chat_request(
        body, max_n=server.max_n, max_messages=server.max_messages),
    reply=lambda reply: json_bytes(reply.body),
    frames=lambda stream: stream.frames,  # already OpenAI events: forwarded as they are
    stream_end=openai_wire.SSE_DONE,
    stream_error=lambda e: openai_wire.sse_frame(e.body()),  # the OpenAI SDK raises on it
    error=lambda e: e.to_json(),
)
ANTHROPIC = Dialect(
    parse=lambda body, server: anthropic_wire.parse_messages_request(body),
    reply=lambda reply: json_bytes(anthropic_wire.reply_to_anthropic(reply)),
    frames=anthropic_frames,
    stream_end=b"",
    stream_error=anthropic_wire.error_frame,
    error=anthropic_wire.error_body,
)


class Models:
    def __init__(self, app: TollwayApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        created = int(self.app.started)
        data = [{"id": m, "object": "model", "created": created, "owned_by": "tollway"}
                for m in self.app.config.public_models()]
        await send_json(send, 200, json_bytes({"object": "list", "data": data}), _rid(scope))


class Health:
    """Liveness: the process answers. (A class, not a function: Starlette would wrap a
    plain function endpoint in its Request/Response machinery.)"""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, b'{"status":"ok"}', _rid(scope))


class Ready:
    def __init__(self, app: TollwayApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        report = await readiness(self.app.config, self.app.gateway)
        await send_json(send, 200 if report["ready"] else 503, json_bytes(report), _rid(scope))


class Metrics:
    """Prometheus exposition. Budget gauges are read from the store at scrape time."""

    def __init__(self, app: TollwayApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.app.gateway
        try:
            budgets = await budget_levels(gateway)
        except Exception:  # the store is down: the rest of the metrics still matter
            gateway.observer.store_error("budgets")
            budgets = []
        body = gateway.observer.render(budgets, gateway.ledger.pending, upstream_levels(gateway))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
            (b"content-length", str(len(body)).encode()), *_rid(scope)]})
        await send({"type": "http.response.body", "body": body})


def upstream_levels(gateway: Gateway) -> list[UpstreamLevel]:
    out = []
    for alias, deps in gateway.deployments().items():
        for d in deps:
            up = gateway.router.upstreams[d]
            out.append(UpstreamLevel(alias, d.provider, d.model, up.breaker.state,
                                     up.load.in_flight, up.pacer.snapshot().queued))
    return out


async def budget_levels(gateway: Gateway) -> list[tuple[str, str, str, str, float]]:
    """What is left of every named budget: global, teams, features and keys."""
    cfg, now = gateway.config.budgets, gateway.clock()
    applied: list[budget.Applied] = []
    who = [budget.Who()]
    who += [budget.Who(team=t) for t in cfg.teams]
    who += [budget.Who(feature=f) for f in cfg.features if f != "*"]
    who += [budget.Who(key_lineage=k.lineage, key_budgets=tuple(k.budgets))
            for k in await gateway.store.keys.all() if k.budgets and k.refusal(now) is None]
    seen: set[str] = set()
    for w in who:
        for a in budget.applicable(cfg, w, now):
            if a.counter not in seen:
                seen.add(a.counter)
                applied.append(a)
    levels = await gateway.store.budgets.levels([a.counter for a in applied], now)
    return [(a.scope, a.name, a.metric, a.period, max(a.limit - lvl, 0.0))
            for a, lvl in zip(applied, levels, strict=True)]


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    err = NotFound(f"No route for {scope['method']} {scope['path']}. Tollway serves "
                   "/v1/chat/completions, /v1/messages, /v1/models, /v1/conversations, "
                   "/health, /health/ready, /metrics and /admin/.")
    await send_error(send, err, _rid(scope))


def _rid(scope: Scope) -> Headers:
    return [(b"x-request-id", scope["tollway.request_id"].encode())]


def _wrong_method(allowed: str) -> Any:
    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        err = MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; "
                               f"use {allowed}.")
        await send_error(send, err, [*_rid(scope), (b"allow", allowed.encode())])
    return handler


class TollwayApp:
    """The ASGI application: routing plus startup/shutdown of the gateway."""

    def __init__(self, config: Config, gateway: Gateway | None = None) -> None:
        self.config = config
        self.gateway = gateway if gateway is not None else Gateway(config)
        self.started = time.time()
        routes = [
            Route("/v1/chat/completions", ChatEndpoint(self, OPENAI), methods=["POST"]),
            Route("/chat/completions", ChatEndpoint(self, OPENAI), methods=["POST"]),
            Route("/v1/messages", ChatEndpoint(self, ANTHROPIC), methods=["POST"]),
            Route("/v1/models", Models(self), methods=["GET"]),
            Route("/models", Models(self), methods=["GET"]),
            Route("/health", Health(), methods=["GET"]),
            Route("/health/ready", Ready(self), methods=["GET"]),
            Route("/metrics", Metrics(self), methods=["GET"]),
            # Every method: the endpoint refuses the wrong ones in the OpenAI shape.
            Route("/v1/conversations", ConversationsEndpoint(self, one=False),
                  methods=ANY_METHOD),
            Route("/v1/conversations/{id}", ConversationsEndpoint(self, one=True),
                  methods=ANY_METHOD),
            *admin_routes(self),
        ]
        self.router = Router(routes=routes, default=not_found)
        self._by_path = {r.path: r for r in routes}
        self._wrong = {r.path: _wrong_method(",".join(sorted(r.methods or ()))) for r in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "http":
            e = Edge(scope)
            scope["tollway.edge"] = e
            scope["tollway.request_id"] = e.request_id
            # Fixed paths are dispatched by one dict lookup (the hot path); Starlette's
            # router handles the rest. A wrong method keeps the OpenAI error shape.
            route = self._by_path.get(scope["path"])
            if route is not None:
                if scope["method"] in (route.methods or ()):
                    await route.endpoint(scope, receive, send)
                else:
                    await self._wrong[route.path](scope, receive, send)
                return
        await self.router(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                # Everything loaded so far lives as long as the process: keep it out of
                # every future cyclic-GC pass.
                gc.freeze()
                await self.gateway.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.gateway.close()  # flushes the ledger, sends pending alerts
                for p in self.gateway.providers.values():
                    close = getattr(p, "close", None)
                    if close is not None:
                        await close()
                await http.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(config: Config) -> TollwayApp:
    app = TollwayApp(config)
    if config.server.access_log:
        app.gateway.observer.log_to()
    return app


def app_from_environment() -> TollwayApp:
    """For worker processes (`tollway serve --workers N`): the configuration from
    TOLLWAY_CONFIG (or ./tollway.yaml), as the parent process read it."""
    from tollway import config as config_mod

    return create_app(config_mod.load(None))


__all__ = ["TollwayApp", "__version__", "create_app"]
