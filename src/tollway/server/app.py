"""The ASGI application: the routes, each a plain ASGI callable given the gateway (never
the app), and the gateway's start and close on the server's lifespan."""

from __future__ import annotations

import gc
import time
from typing import Any

from starlette.routing import Route, Router

from tollway import __version__
from tollway.config import Config
from tollway.errors import MethodNotAllowed, ModelNotFound, NotFound, TollwayError
from tollway.gateway import Gateway
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
from tollway.server.chat import ANTHROPIC, OPENAI, ChatEndpoint
from tollway.server.connections import ConnectionLimits
from tollway.server.conversations import ConversationsEndpoint
from tollway.server.drain import Drain
from tollway.server.embeddings import EMBEDDINGS
from tollway.server.metrics import Metrics
from tollway.server.ready import readiness


class Models:
    """GET /v1/models: the models served; GET /v1/models/{id}: one of them (what the
    SDKs' `models.retrieve` asks), or a 404 naming what is served."""

    def __init__(self, config: Config, started: float, *, one: bool = False,
                 dimensions: dict[str, int] | None = None) -> None:
        self.config = config
        self.started = started
        self.one = one
        self.dimensions = dimensions or {}  # an embedding model's, by alias

    def _model(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"id": name, "object": "model", "created": int(self.started),
                               "owned_by": "tollway"}
        found = self.config.resolve(name) if self.dimensions else None
        if found is not None and found[0] in self.dimensions:
            # An embedding model's vector size: an extra field, which the SDKs keep.
            out["dimensions"] = self.dimensions[found[0]]
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        served = self.config.public_models()
        if not self.one:
            body = {"object": "list", "data": [self._model(m) for m in served]}
            await send_json(send, 200, json_bytes(body), _rid(scope))
            return
        if scope["method"] != "GET":
            await _wrong_method("GET")(scope, receive, send)
            return
        name = scope["path_params"]["id"]
        if name not in served:
            err = ModelNotFound(f"The model '{name[:256]}' does not exist on this gateway. "
                                f"Available models: {', '.join(served) or '(none)'}.",
                                param="model")
            await send_error(send, err, _rid(scope))
            return
        await send_json(send, 200, json_bytes(self._model(name)), _rid(scope))


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
                   "/v1/chat/completions, /v1/messages, /v1/embeddings, /v1/models, "
                   "/v1/conversations, /health, /health/ready, /metrics and /admin/.")
    await send_error(send, err, _rid(scope))


def _rid(scope: Scope) -> Headers:
    return [(b"x-request-id", scope["tollway.request_id"].encode())]


def _wrong_method(allowed: str, endpoint: Any = None) -> Any:
    """405 in the route's own dialect (Anthropic's shape on /v1/messages)."""
    shape = endpoint.dialect.error if isinstance(endpoint, ChatEndpoint) else (
        TollwayError.to_json)

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        err = MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; "
                               f"use {allowed}.")
        await send_json(send, err.status, shape(err),
                        [*_rid(scope), (b"allow", allowed.encode())])
    return handler


class TollwayApp:
    """The ASGI application: routing plus startup/shutdown of the gateway."""

    def __init__(self, config: Config, gateway: Gateway | None = None) -> None:
        self.config = config
        self.gateway = gateway if gateway is not None else Gateway(config)
        self.started = time.time()
        gw = self.gateway
        self.drain = Drain(config.server.drain_seconds)
        self.connection_limits = ConnectionLimits(config.server)  # GuardedHttpProtocol's
        dims = gw.routes.dimensions()
        routes = [
            Route("/v1/chat/completions", ChatEndpoint(gw, OPENAI, self.drain),
                  methods=["POST"]),
            Route("/chat/completions", ChatEndpoint(gw, OPENAI, self.drain), methods=["POST"]),
            Route("/v1/messages", ChatEndpoint(gw, ANTHROPIC, self.drain), methods=["POST"]),
            Route("/v1/embeddings", ChatEndpoint(gw, EMBEDDINGS, self.drain),
                  methods=["POST"]),
            Route("/embeddings", ChatEndpoint(gw, EMBEDDINGS, self.drain), methods=["POST"]),
            Route("/v1/models", Models(config, self.started, dimensions=dims),
                  methods=["GET"]),
            Route("/models", Models(config, self.started, dimensions=dims), methods=["GET"]),
            # Every method: the endpoint refuses the wrong ones in the OpenAI shape. A
            # model's name may hold slashes (`openai/gpt-4o`), hence `path`.
            Route("/v1/models/{id:path}",
                  Models(config, self.started, one=True, dimensions=dims), methods=ANY_METHOD),
            Route("/models/{id:path}",
                  Models(config, self.started, one=True, dimensions=dims), methods=ANY_METHOD),
            Route("/health", Health(), methods=["GET"]),
            Route("/health/ready", Ready(gw), methods=["GET"]),
            Route("/metrics", Metrics(gw), methods=["GET"]),
            # Every method: the endpoint refuses the wrong ones in the OpenAI shape.
            Route("/v1/conversations", ConversationsEndpoint(gw, one=False),
                  methods=ANY_METHOD),
            Route("/v1/conversations/{id}", ConversationsEndpoint(gw, one=True),
                  methods=ANY_METHOD),
            *admin_routes(gw),
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
                # Everything loaded so far lives as long as the process: keep it out of
                # every future cyclic-GC pass.
                gc.freeze()
                self.drain.watch_signals()
                await self.gateway.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                # Flushes the ledger, sends pending alerts, closes the store, the
                # providers and the upstream connections.
                await self.gateway.close()
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
