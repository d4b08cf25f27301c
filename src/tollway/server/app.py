"""The ASGI application: the routes, each a plain ASGI callable given the gateway (never
the app), and the gateway's start and close on the server's lifespan."""

from __future__ import annotations

import gc
import time
from typing import Any

from starlette.routing import Route, Router

from tollway.config import Config
from tollway.config.wildcards import is_pattern
from tollway.errors import MethodNotAllowed, ModelNotFound, NotFound, TollwayError
from tollway.gateway import Gateway
from tollway.policy.tiers import PREFIX as TIER_PREFIX
from tollway.server.admin import ANY_METHOD, admin_routes
from tollway.server.asgi import (
    Edge,
    Headers,
    Receive,
    Scope,
    Send,
    json_bytes,
    send_error,
    send_json,
)
from tollway.server.batch_runner import BatchRunner
from tollway.server.batches import BatchesEndpoint, FilesEndpoint
from tollway.server.chat import ANTHROPIC, OPENAI, ChatEndpoint
from tollway.server.connections import ConnectionLimits
from tollway.server.console import ConsoleFiles
from tollway.server.console import load as load_console
from tollway.server.console_requests import ConsoleRequest
from tollway.server.console_session import ConsoleSession
from tollway.server.conversations import ConversationsEndpoint
from tollway.server.count_tokens import CountTokensEndpoint
from tollway.server.dashboard import dashboard_routes
from tollway.server.drain import Drain
from tollway.server.embeddings import EMBEDDINGS
from tollway.server.message_batches import message_batch_routes
from tollway.server.metrics import Metrics
from tollway.server.ready import readiness
from tollway.server.reload import Reloader, Source
from tollway.server.responses import RESPONSES, ResponsesEndpoint
from tollway.version import __version__

# The cyclic GC's youngest generation is walked whenever this many more container
# objects are alive than at its last pass (Python's default: 700). With tens of
# requests in flight that is every few requests, and each pass walks all of their
# objects to free nothing: a request's objects go by reference counting (no cycles;
# tests/unit/test_disconnect_watch.py). At 64 connections those passes were ~7 % of a
# JSON request's instructions (~69k of ~965k); at 50,000 they are gone.
GC_YOUNG = 50_000


class Models:
    """GET /v1/models: the models served — the configured names, and every model of
    the price table a wildcard alias serves; GET /v1/models/{id}: any name a request
    could be served by (a dated snapshot, `openai/gpt-4o`, a model no table knows that
    a wildcard takes), or a 404 in OpenAI's shape."""

    def __init__(self, gateway: Gateway, started: float, *, one: bool = False) -> None:
        self.gateway = gateway  # its routes read per request: a reload swaps them
        self.started = started
        self.one = one

    def _model(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"id": name, "object": "model", "created": int(self.started),
                               "owned_by": "tollway"}
        dims = self.gateway.routes.dimensions_of(name)
        if dims is not None:  # an embedding model's vector size: the SDKs keep extra fields
            out["dimensions"] = dims
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.one:
            body = {"object": "list",
                    "data": [self._model(m) for m in self.gateway.routes.listed()]}
            await send_json(send, 200, json_bytes(body), _rid(scope))
            return
        if scope["method"] != "GET":
            await _wrong_method("GET")(scope, receive, send)
            return
        name = scope["path_params"]["id"]
        if not self._serves(name):
            served = self.gateway.routes.config.public_models()
            err = ModelNotFound(f"The model '{name[:256]}' does not exist on this gateway. "
                                f"Available models: {', '.join(served) or '(none)'}.",
                                param="model")
            await send_error(send, err, _rid(scope))
            return
        await send_json(send, 200, json_bytes(self._model(name)), _rid(scope))

    def _serves(self, name: str) -> bool:
        if name.startswith(TIER_PREFIX):
            return name[len(TIER_PREFIX):] in self.gateway.routes.config.tiers
        return not is_pattern(name) and self.gateway.routes.servable(name)


class Health:
    """Liveness: the process answers. (A class, not a function: Starlette would wrap a
    plain function endpoint in its Request/Response machinery.)"""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, b'{"status":"ok"}', _rid(scope))


class Ready:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        report = await readiness(self.gateway.config, self.gateway)
        await send_json(send, 200 if report["ready"] else 503, json_bytes(report), _rid(scope))


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    err = NotFound(f"No route for {scope['method']} {scope['path']}. Tollway serves "
                   "/v1/chat/completions, /v1/messages, /v1/messages/count_tokens, "
                   "/v1/messages/batches, /v1/responses, /v1/embeddings, /v1/files, "
                   "/v1/batches, /v1/models, /v1/conversations, /health, "
                   "/health/ready, /metrics, /admin/ and the console at /.")
    await send_error(send, err, _rid(scope))


def _rid(scope: Scope) -> Headers:
    return [(b"x-request-id", scope["tollway.request_id"].encode())]


def _wrong_method(allowed: str, endpoint: Any = None) -> Any:
    """405 in the route's own dialect (Anthropic's shape on /v1/messages)."""
    dialect = getattr(endpoint, "dialect", None)
    shape = dialect.error if dialect is not None else TollwayError.to_json

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        err = MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; "
                               f"use {allowed}.")
        await send_json(send, err.status, shape(err),
                        [*_rid(scope), (b"allow", allowed.encode())])
    return handler


class TollwayApp:
    """The ASGI application: routing plus startup/shutdown of the gateway.

    `owns_process`: the app is the process's server (`tollway serve`), so its start-up
    may tune the process — the cyclic GC, the shutdown and reload signals. A guest in
    someone else's process (`tollway.library`) leaves them alone: they are its host's.
    `source`: where `config` was read, for reloads (None: given in code)."""

    def __init__(self, config: Config, gateway: Gateway | None = None,
                 source: Source | None = None, *, owns_process: bool = True) -> None:
        self.config = config
        self.owns_process = owns_process
        self.gateway = gateway if gateway is not None else Gateway(config)
        self.started = time.time()
        gw = self.gateway
        self.drain = Drain(config.server.drain_seconds)
        self.connection_limits = ConnectionLimits(config.server)  # GuardedHttpProtocol's
        self.batches = BatchRunner(gw)
        self.reloader = Reloader(gw, source)
        console = load_console()
        routes = [
            Route("/v1/chat/completions", ChatEndpoint(gw, OPENAI, self.drain),
                  methods=["POST"]),
            Route("/chat/completions", ChatEndpoint(gw, OPENAI, self.drain), methods=["POST"]),
            Route("/v1/messages", ChatEndpoint(gw, ANTHROPIC, self.drain), methods=["POST"]),
            Route("/v1/messages/count_tokens", CountTokensEndpoint(gw), methods=["POST"]),
            Route("/v1/responses", ChatEndpoint(gw, RESPONSES, self.drain), methods=["POST"]),
            Route("/responses", ChatEndpoint(gw, RESPONSES, self.drain), methods=["POST"]),
            Route("/v1/embeddings", ChatEndpoint(gw, EMBEDDINGS, self.drain),
                  methods=["POST"]),
            Route("/embeddings", ChatEndpoint(gw, EMBEDDINGS, self.drain), methods=["POST"]),
            Route("/v1/models", Models(gw, self.started), methods=["GET"]),
            Route("/models", Models(gw, self.started), methods=["GET"]),
            # Every method: the endpoint refuses the wrong ones in the OpenAI shape. A
            # model's name may hold slashes (`openai/gpt-4o`), hence `path`.
            Route("/v1/models/{id:path}", Models(gw, self.started, one=True),
                  methods=ANY_METHOD),
            Route("/models/{id:path}", Models(gw, self.started, one=True),
                  methods=ANY_METHOD),
            Route("/health", Health(), methods=["GET"]),
            Route("/health/ready", Ready(gw), methods=["GET"]),
            Route("/metrics", Metrics(gw), methods=["GET"]),
            # Every method: the endpoint refuses the wrong ones in the OpenAI shape.
            Route("/v1/conversations", ConversationsEndpoint(gw, one=False),
                  methods=ANY_METHOD),
            Route("/v1/conversations/{id}", ConversationsEndpoint(gw, one=True),
                  methods=ANY_METHOD),
            # Every method: the endpoint refuses the wrong ones in the OpenAI shape.
            *(Route(f"{prefix}/responses/{{id}}{tail}", ResponsesEndpoint(gw, items=bool(tail)),
                    methods=ANY_METHOD)
              for prefix in ("/v1", "") for tail in ("", "/input_items")),
            *(Route(f"{prefix}/files{tail}", FilesEndpoint(gw, one=bool(tail),
                                                              content=tail.endswith("content")),
                    methods=ANY_METHOD)
              for prefix in ("/v1", "") for tail in ("", "/{id}", "/{id}/content")),
            *(Route(f"{prefix}/batches{tail}", BatchesEndpoint(gw, self.batches, one=bool(tail),
                                                                cancel=tail.endswith("cancel")),
                    methods=ANY_METHOD)
              for prefix in ("/v1", "") for tail in ("", "/{id}", "/{id}/cancel")),
            *message_batch_routes(gw, self.batches),
            *admin_routes(gw, reload=self.reloader.answer),
            *dashboard_routes(gw),
            # The console: its page, its sign-in, a stopped request's cost, its files.
            Route("/", ConsoleFiles(console, index=True), methods=["GET", "HEAD"]),
            Route("/console/session", ConsoleSession(gw), methods=ANY_METHOD),
            Route("/console/requests/{id}", ConsoleRequest(gw), methods=ANY_METHOD),
            Route("/console/{path:path}", ConsoleFiles(console), methods=ANY_METHOD),
        ]
        self.router = Router(routes=routes, default=not_found)
        # Only the fixed paths: "/v1/conversations/{id}" taken literally has no id.
        self._by_path = {r.path: r for r in routes if "{" not in r.path}
        self._wrong = {r.path: _wrong_method(",".join(sorted(r.methods or ())), r.endpoint)
                       for r in self._by_path.values()}

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
                if self.owns_process:
                    # Everything loaded so far lives as long as the process: keep it out
                    # of every future cyclic-GC pass, and make those passes rare.
                    gc.freeze()
                    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
                    self.drain.watch_signals()
                    self.reloader.watch_signal()
                await self.gateway.start()
                self.batches.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                # Flushes the ledger, sends pending alerts, closes the store, the
                # providers and the upstream connections — once the batch lines in
                # flight are done (the rest wait in the store for the next process).
                self.reloader.unwatch()
                await self.batches.close()
                await self.gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(config: Config, source: Source | None = None) -> TollwayApp:
    app = TollwayApp(config, source=source)
    if config.access_log:
        app.gateway.observer.log_to()
    return app


def app_from_environment() -> TollwayApp:
    """For worker processes (`tollway serve --workers N`): the configuration from
    TOLLWAY_CONFIG (or ./tollway.yaml), as the parent process read it."""
    from tollway import config as config_mod

    return create_app(config_mod.load(None), Source(config_mod.source(None)))


__all__ = ["Source", "TollwayApp", "__version__", "create_app"]
