"""`tollway.Gateway`: the gateway in-process, behind the official SDKs.

    with tollway.Gateway.open("tollway.yaml") as gw:   # open(): the zero-setup default
        client = gw.openai()                            # an openai.OpenAI
        with gw.attribute(user="u-42", feature="search"):
            client.chat.completions.create(model="local", messages=[...])

It is the server's own ASGI app (`server/app.TollwayApp`, every route and stage) run
on an event loop of its own thread (`loop.OwnedLoop`), its lifespan driven as a server
drives it; the SDK clients it makes carry an httpx transport (`transport.py`) that
hands each request to that loop instead of a socket. So budgets, limits, the cache,
guards, conversations, the ledger and the metrics apply exactly as over HTTP, no port is
opened, and `close` leaves nothing running: it ends the requests still in flight (as
clients hanging up), runs the lifespan's shutdown (the ledger flushed, the store and
the upstream connections closed), then stops the loop and joins its thread.

(`tollway.gateway.Gateway` is the pipeline inside it; this is the outside.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Mapping, MutableMapping
from concurrent.futures import Future
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx2 as httpx

from tollway import config as config_mod
from tollway.config import Config
from tollway.library.attribution import Attribution, attribute
from tollway.library.exchange import Exchange
from tollway.library.loop import OwnedLoop
from tollway.library.transport import AsyncLoopTransport, LoopTransport
from tollway.server.app import TollwayApp

if TYPE_CHECKING:  # (aliased: the methods below are named after them)
    import anthropic as anthropic_sdk
    import openai as openai_sdk

# The host the clients address: any name would do, nothing resolves it.
BASE_URL = "http://tollway.internal"
# The key an SDK is given when there is none to give (open mode): the SDKs insist on
# one, and the gateway in open mode lets a non-`tw-` key through as nobody in particular.
NO_KEY = "tollway-in-process"

ConfigLike = Config | str | os.PathLike[str] | Mapping[str, Any] | None


def load_config(source: ConfigLike, env: Mapping[str, str] | None = None) -> Config:
    """A `Config` as given, a YAML file's path, a mapping as the YAML would hold, or None
    for what `tollway serve` would use (TOLLWAY_CONFIG, ./tollway.yaml, else the embedded
    default: the bundled local model)."""
    e = None if env is None else dict(env)
    if isinstance(source, Config):
        return source
    if source is None or isinstance(source, (str, os.PathLike)):
        return config_mod.load(source, e)
    return config_mod.parse(dict(source), e)


class Gateway(AbstractContextManager["Gateway"]):
    """A Tollway gateway running in this process. Make one with `open`; use it from any
    thread and any event loop; `close` it (or use `with`)."""

    def __init__(self, config: Config, *, access_log: bool = False) -> None:
        """Prefer `Gateway.open`. Starts the gateway (store, ledger, caches) on a thread of
        its own and returns once it is serving. `access_log`: a JSON line per request on
        stderr, as `tollway serve` writes (off: the host's stderr is its own, and the
        ledger holds the same rows)."""
        self.config = config
        self._closed = False
        self._lock = threading.Lock()  # `close` against requests being launched
        self._inflight: set[Exchange] = set()  # touched on the loop only
        self._loop = OwnedLoop()
        try:
            # Built on the loop's thread: whatever the gateway binds to a loop at
            # construction binds to its own.
            self.app: TollwayApp = self._loop.run(self._build(config, access_log))
        except BaseException:
            self._loop.close()
            raise
        try:
            self._loop.run(self._lifespan_start())
        except BaseException:  # let go of what was opened (the store's thread, files)
            with contextlib.suppress(Exception):
                self._loop.run(self.app.gateway.close())
            self._loop.close()
            raise

    @classmethod
    def open(cls, config: ConfigLike = None, *, env: Mapping[str, str] | None = None,
             access_log: bool = False) -> Gateway:
        """Open a gateway on `config` (see `load_config`); `env` stands in for the
        environment `${VAR}`s are read from."""
        return cls(load_config(config, env), access_log=access_log)

    @classmethod
    async def aopen(cls, config: ConfigLike = None, *, env: Mapping[str, str] | None = None,
                    access_log: bool = False) -> Gateway:
        """`open` from async code, without blocking its loop while the gateway starts."""
        return await asyncio.to_thread(cls.open, config, env=env, access_log=access_log)

    # --- clients -------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop.loop

    def http(self, *, api_key: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx.Client on the gateway (base URL its root): the admin API, /metrics,
        anything the SDKs do not cover. Sends `api_key` (the master key by default)."""
        return httpx.Client(transport=LoopTransport(self), base_url=BASE_URL,
                            headers=self._auth(api_key), **kwargs)

    def async_http(self, *, api_key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=AsyncLoopTransport(self), base_url=BASE_URL,
                                 headers=self._auth(api_key), **kwargs)

    def openai(self, *, api_key: str | None = None, **kwargs: Any) -> openai_sdk.OpenAI:
        """An `openai.OpenAI` whose every request this gateway answers. `api_key`: a
        Tollway key (`tw-…`) to spend as; by default the master key when one is
        configured, else none (open mode). The SDK's retries are off unless
        `max_retries` says otherwise: the gateway already retries upstream, and retrying
        its refusals (a budget spent) only waits to be refused again."""
        import openai

        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=self._key(api_key),
                             http_client=httpx.Client(transport=LoopTransport(self)),
                             **kwargs)

    def async_openai(self, *, api_key: str | None = None, **kwargs: Any
                     ) -> openai_sdk.AsyncOpenAI:
        """As `openai`, an `openai.AsyncOpenAI` for any event loop."""
        import openai

        kwargs.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(
            base_url=f"{BASE_URL}/v1", api_key=self._key(api_key),
            http_client=httpx.AsyncClient(transport=AsyncLoopTransport(self)), **kwargs)

    def anthropic(self, *, api_key: str | None = None, **kwargs: Any) -> anthropic_sdk.Anthropic:
        """As `openai`, an `anthropic.Anthropic` (the Messages API)."""
        import anthropic

        kwargs.setdefault("max_retries", 0)
        return anthropic.Anthropic(base_url=BASE_URL, api_key=self._key(api_key),
                                   http_client=httpx.Client(transport=LoopTransport(self)),
                                   **kwargs)

    def async_anthropic(self, *, api_key: str | None = None, **kwargs: Any
                        ) -> anthropic_sdk.AsyncAnthropic:
        import anthropic

        kwargs.setdefault("max_retries", 0)
        return anthropic.AsyncAnthropic(
            base_url=BASE_URL, api_key=self._key(api_key),
            http_client=httpx.AsyncClient(transport=AsyncLoopTransport(self)), **kwargs)

    @staticmethod
    def attribute(*, user: str | None = None, feature: str | None = None,
                  conversation: str | None = None, tier: str | None = None
                  ) -> AbstractContextManager[Attribution]:
        """Attribute the requests sent inside the block (any client, any gateway) to an
        end user, a feature, a conversation, a tier: for budgets, rate limits and the
        ledger, as the `x-tollway-*` headers do over HTTP."""
        return attribute(user=user, feature=feature, conversation=conversation, tier=tier)

    def _key(self, api_key: str | None) -> str:
        return api_key or self.config.auth.master_key or NO_KEY

    def _auth(self, api_key: str | None) -> dict[str, str]:
        key = api_key or self.config.auth.master_key
        return {"authorization": f"Bearer {key}"} if key else {}

    # --- what the transports call (transport.Host) ----------------------------------------

    def launch(self, exchange: Exchange) -> Future[None]:
        with self._lock:
            if self._closed:
                raise httpx.ConnectError("this tollway.Gateway is closed")
            return self._loop.submit(self._serve(exchange))

    def on_loop(self) -> bool:
        return self._loop.on_it()

    async def _serve(self, exchange: Exchange) -> None:
        self._inflight.add(exchange)
        try:
            await exchange.run(self.app)
        finally:
            self._inflight.discard(exchange)

    # --- lifetime ------------------------------------------------------------------------

    @staticmethod
    async def _build(config: Config, access_log: bool) -> TollwayApp:
        app = TollwayApp(config, owns_process=False)
        if access_log:
            app.gateway.observer.log_to()
        return app

    async def _lifespan_start(self) -> None:
        self._to_app: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._from_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self._lifespan = asyncio.create_task(self.app(
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
            self._to_app.get, self._from_app.put))
        await self._lifespan_step("startup")

    async def _lifespan_step(self, step: str) -> None:
        await self._to_app.put({"type": f"lifespan.{step}"})
        got = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait([got, self._lifespan], return_when=asyncio.FIRST_COMPLETED)
        if not got.done():  # the lifespan ended (raised) instead of answering
            got.cancel()
            self._lifespan.result()
            raise RuntimeError(f"the gateway's lifespan ended during {step}")
        msg = got.result()
        if msg["type"] != f"lifespan.{step}.complete":
            raise RuntimeError(f"the gateway's {step} failed: {msg.get('message', msg)}")

    async def _shut_down(self) -> None:
        """The requests in flight end as clients that hung up (upstream calls cancelled,
        each accounted for), then the lifespan's shutdown."""
        for exchange in list(self._inflight):
            exchange.disconnect()
        running = [e.task for e in self._inflight if e.task is not None]
        if running:
            await asyncio.wait(running)
        await self._lifespan_step("shutdown")
        await self._lifespan

    def close(self) -> None:
        """Stop: nothing of the gateway's is left running — no thread, task, connection
        or open file. Idempotent. Clients made by it refuse requests from now on."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._loop.on_it():
            raise RuntimeError("tollway.Gateway.close() called from the gateway's own loop")
        try:
            self._loop.run(self._shut_down())
        finally:
            self._loop.close()

    async def aclose(self) -> None:
        """`close` from async code, without blocking its loop."""
        await asyncio.to_thread(self.close)

    @property
    def closed(self) -> bool:
        return self._closed

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

