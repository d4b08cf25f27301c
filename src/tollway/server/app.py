"""The ASGI application: the routes, each a plain ASGI callable given the gateway (never
the app), and the gateway's start and close on the server's lifespan."""

from __future__ import annotations

import gc
import time
from typing import Any

from starlette.routing import Route, Router

from tollway import __version__
from tollway.config import Config
from tollway.errors import MethodNotAllowed, NotFound
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
from tollway.server.metrics import Metrics
from tollway.server.ready import readiness


class Models:
    def __init__(self, config: Config, started: float) -> None:
        self.config = config
        self.started = started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        created = int(self.started)
        data = [{"id": m, "object": "model", "created": created, "owned_by": "tollway"}
                for m in self.config.public_models()]
        await send_json(send, 200, json_bytes({"object": "list", "data": data}), _rid(scope))


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
        gw = self.gateway
        self.drain = Drain(config.server.drain_seconds)
        self.connection_limits = ConnectionLimits(config.server)  # GuardedHttpProtocol's
        routes = [
            Route("/v1/chat/completions", ChatEndpoint(gw, OPENAI, self.drain),
                  methods=["POST"]),
            Route("/chat/completions", ChatEndpoint(gw, OPENAI, self.drain), methods=["POST"]),
            Route("/v1/messages", ChatEndpoint(gw, ANTHROPIC, self.drain), methods=["POST"]),
            Route("/v1/models", Models(config, self.started), methods=["GET"]),
            Route("/models", Models(config, self.started), methods=["GET"]),
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
