"""A gateway assembled from its configuration: every stage built once, started and
closed together, and the one object the server (or Python code) talks to.

`Gateway` owns what lives as long as it does — the store, the upstream transport and
the providers, the ledger writer, the cache, background tasks — and closes all of it in
`close`, so a gateway used as a library leaves nothing running. The request path itself
is `Pipeline` (pipeline.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from tollway import tasks, tracing
from tollway.accounting import tokens
from tollway.accounting.settlement import Outcome, Settlement
from tollway.cache.controls import for_alias
from tollway.cache.response import ResponseCache
from tollway.config import Config, changes
from tollway.conversation.memory import Memory
from tollway.errors import TollwayError, Unauthorized
from tollway.gateway import counting
from tollway.gateway.call import Call
from tollway.gateway.capture import Capture
from tollway.gateway.counting import TokenCount
from tollway.gateway.pipeline import Pipeline, Stages
from tollway.gateway.routes import Routes
from tollway.gateway.turns import TurnRouter
from tollway.gateway.upstream_batch import UpstreamBatches
from tollway.guards.policy import Policies
from tollway.observe import Observer
from tollway.policy import auth
from tollway.policy.admission import Admitter
from tollway.policy.alerts import Alerts
from tollway.policy.plan import Planner
from tollway.policy.recovery import GRACE, BudgetRecovery, Held
from tollway.policy.sessions import Sessions
from tollway.providers.base import Provider, redact
from tollway.providers.http import Transport
from tollway.providers.local import SentenceModel
from tollway.providers.registry import build_providers, forget_deployments
from tollway.routing.router import Router
from tollway.store import open_store
from tollway.store.base import Store
from tollway.store.ledger_writer import Ledger
from tollway.store.outage import Outages
from tollway.types import Answer, ChatRequest, Deployment, EmbeddingRequest

log = logging.getLogger("tollway")
PRUNE_SECONDS = 3600.0  # how often idle conversations are looked for (with a retention)
# How long start waits for a rebuild of the budget counters to read the ledger; past it,
# the replica serves (budgeted requests get 503 until the rebuild is done).
STARTUP_REBUILD_SECONDS = 10.0


class Gateway:
    def __init__(self, config: Config, providers: dict[str, Provider] | None = None,
                 store: Store | None = None, clock: Callable[[], float] = time.time,
                 transport: Transport | None = None) -> None:
        self.config = config
        self.clock = clock
        self.transport = transport if transport is not None else Transport()
        self.providers = (providers if providers is not None
                          else build_providers(config, self.transport, _sentence_model))
        self.store = store if store is not None else open_store(config)
        self.observer = Observer()
        self.outages = Outages(self.observer.store_error)
        self.ledger = Ledger(self.store.ledger, config.ledger, config.store.path)
        self.alerts = Alerts(config.alerts, self.store, self.transport)
        self.router = Router(self.providers)
        self.routes = Routes(config, self.router, forget_deployments)
        # Made once it is wanted, and kept: a reload that turns it off keeps its entries.
        self.cache = (ResponseCache(config, self.store.cache, clock,
                                    lambda: self.observer.store_error("cache"))
                      if _caches(config) else None)
        self.memory = Memory(config, self.store.conversations, self.outages, clock)
        self.turns = (TurnRouter(config, self.routes)
                      if any(mc.route_by_turn for mc in config.models.values()) else None)
        self.capture = Capture(config.capture) if config.capture.enabled else None
        self.upstream = UpstreamBatches(self.providers, config.server.batch_poll_seconds)
        held = Held()  # this process's budget holds: put back if the store loses them
        self.recovery = BudgetRecovery(config, self.store, held, self.ledger.flush, clock)
        # Also a batch's: its lines' holds, taken when it is created and given back.
        self.admission = Admitter(config, self.store, self.outages, held)
        self.sessions = Sessions(self.store.cache, clock)  # the console's sign-ins
        self._use(config, self._pipeline(config, self.routes, self.router, self.memory,
                                         self.admission, self.turns, self.cache))
        self._warming: asyncio.Task[None] | None = None
        # The cache's and the turn router's models, new tokenizers: loading, awaited at close.
        self._starting: set[asyncio.Task[None]] = set()
        self._pruning: asyncio.Task[None] | None = None
        self._tracing = False  # this gateway turned tracing on (and so turns it off)

    def _pipeline(self, config: Config, routes: Routes, router: Router, memory: Memory,
                  admission: Admitter, turns: TurnRouter | None, cache: ResponseCache | None
                  ) -> Pipeline:
        """The request path over these rules and this gateway's state."""
        return Pipeline(Stages(
            routes=routes, guards=Policies(config), memory=memory,
            planner=Planner(config, self._levels),
            cache=cache if cache is not None and _caches(config) else None,
            admission=admission, router=router,
            ledger=self.ledger, observer=self.observer, alerts=self.alerts,
            scrub=self.scrub, clock=self.clock, turns=turns,
            capture=self.capture, upstream=self.upstream))

    def _use(self, config: Config, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline
        # The request path itself (bound here, not wrapped: one call less per step). A
        # request holds the pipeline it began on to its end (server/chat.py), so one
        # in flight across a reload finishes under the configuration it started with.
        self.chat: Callable[[Call, ChatRequest], Awaitable[Answer]] = pipeline.chat
        self.embed: Callable[[Call, EmbeddingRequest], Awaitable[Answer]] = pipeline.embed
        self.priced: Callable[[Call, Outcome], Awaitable[Settlement]] = pipeline.priced
        self.finish: Callable[[Call, Outcome], Awaitable[Settlement]] = pipeline.finish
        self._keys_required = auth.keys_required(config.auth)
        self._secrets = {d.api_key for mc in config.models.values() for d in mc.deployments
                         if d.api_key}

    # --- reload --------------------------------------------------------------------------

    def reload(self, config: Config) -> Reloaded:
        """Serve `config` (already validated) from now on: the rules are rebuilt —
        routes, prices, tiers, limits, budgets' rules, guards, history, the cache's
        settings, alerts, auth — and swapped in at once; the state is kept — the store
        (budget counters, keys, the ledger), the cache's entries, the breakers and
        pacing of deployments kept as they were, the local model. What only a restart
        can change (config/changes.py) keeps running as it was, and is named. A
        problem found while building (a ConfigError) leaves everything as it was."""
        restart = changes.needs_restart(self.config, config)
        config = changes.as_running(self.config, config)
        changed = changes.changed(self.config, config)
        router = Router(self.providers, earlier=self.router)
        routes = Routes(config, router, forget_deployments)
        cache, kept = self.cache, True
        if cache is None and _caches(config):
            cache = ResponseCache(config, self.store.cache, self.clock,
                                  lambda: self.observer.store_error("cache"))
        elif cache is not None:
            kept = cache.reconfigure(config)
        if not kept:
            restart.append("cache.semantic")
        turns = (TurnRouter(config, routes, self.turns)
                 if any(mc.route_by_turn for mc in config.models.values()) else None)
        memory = Memory(config, self.store.conversations, self.outages, self.clock)
        admission = Admitter(config, self.store, self.outages, self.admission.held)
        pipeline = self._pipeline(config, routes, router, memory, admission, turns, cache)
        # The swap: nothing awaited from here on, so a request begins on all of the old
        # configuration or all of the new.
        started = cache is not None and cache is not self.cache
        self.router, self.routes, self.turns, self.memory, self.admission, self.cache = (
            router, routes, turns, memory, admission, cache)
        self._use(config, pipeline)
        self.alerts.cfg = config.alerts
        self.recovery.config = config
        if started and cache is not None:
            self._background(cache.start())
        if turns is not None:  # loads its model, unless the earlier one had it
            self._background(turns.start())
        # New models' tokenizers, off the event loop (those loaded are cached).
        self._background(asyncio.to_thread(tokens.warm, routes.models()))
        forget_deployments()  # the providers' per-deployment caches: remade on use
        return Reloaded(changed, restart)

    # --- the request path ------------------------------------------------------------

    async def authenticate(self, secret: str | None, edge: auth.Caller,
                           session: str | None = None) -> auth.Caller:
        """The caller with its key checked (the master key, a `tw-` key, or nobody in
        open mode) — or, with no key presented, the console session `session` names
        (policy/sessions.py), checked as its key would be; the key store (or the
        sessions') failing means 503: a key cannot be checked."""
        if secret is None and session is not None:
            return await self.outages.closed(
                "keys", "The key store is unreachable, so the console session cannot be "
                "checked right now.", self._session_caller(session, edge))
        if secret is None and not self._keys_required:
            return edge  # open mode and no key presented: nothing to look up
        return await self.outages.closed(
            "keys", "The key store is unreachable, so API keys cannot be checked right now.",
            auth.authenticate(secret, self.store.keys, self.config.auth, self.clock(), edge))

    async def _session_caller(self, token: str, edge: auth.Caller) -> auth.Caller:
        who = await self.sessions.who(token)
        if who is None:
            if not self._keys_required:
                return edge  # open mode: a session that ended leaves an anonymous caller
            raise Unauthorized("Your console session has ended: sign in again.",
                               code="session_ended")
        return await auth.authenticate_identity(who, self.store.keys, self.config.auth,
                                                self.clock(), edge)

    def scrub(self, err: TollwayError) -> TollwayError:
        """Provider keys never leave the server: cut them (and anything key-shaped)
        from an error's message before a caller or a log sees it."""
        err.message = redact(err.message, *self._secrets)
        err.args = (err.message,)
        return err

    def deployments(self) -> dict[str, list[Deployment]]:
        return self.routes.deployments()

    async def count_tokens(self, req: ChatRequest, caller: auth.Caller, tier: str | None,
                           request_id: str) -> TokenCount:
        """A prompt's input tokens for the model it names (not billed: counting.py)."""
        return await counting.count_tokens(self.routes, self.providers, req, caller, tier,
                                           request_id)

    async def _levels(self, counters: list[str], now: float) -> list[float] | None:
        return await self.outages.open("budgets", "no budget downgrade",
                                       self.store.budgets.levels(counters, now))

    # --- lifetime ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving, whatever is down: the store's parts that are unreachable go on
        connecting in the background (store/shared.py). On a store that lost its budget
        counters (or a fresh one), they are rebuilt before this returns."""
        # Traces, if OTEL_* variables ask (in this process: a worker starts its own).
        self._tracing = tracing.start()
        await self.store.open()
        self.ledger.start()
        if self.capture is not None:
            self.capture.start()
        self.observer.start()
        self.recovery.start()
        # A replica that starts on a fresh store (or one that lost its counters) waits
        # for the rebuild rather than refuse its first budgeted requests.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.recovery.checked(), GRACE + STARTUP_REBUILD_SECONDS)
        # Off the event loop: the server answers while the tokenizers load.
        self._warming = asyncio.create_task(asyncio.to_thread(tokens.warm,
                                                              self.routes.models()))
        if self.cache is not None:
            self._background(self.cache.start())
        if self.turns is not None:
            self._background(self.turns.start())
        if self.config.conversations.retention_days is not None:
            self._pruning = asyncio.create_task(self._prune_every(PRUNE_SECONDS))

    async def close(self) -> None:
        """Stop and let go of everything: background tasks, the cache, the alerts in
        flight, the ledger and the capture (flushed), the store, the providers and the
        transport."""
        await tasks.stop(self._pruning)
        if self._warming is not None:
            await self._warming
        for starting in list(self._starting):
            with contextlib.suppress(Exception):  # logged when it failed
                await starting
        if self.cache is not None:
            await self.cache.close()
        if self.turns is not None:
            self.turns.close()
        await self.upstream.close()
        await self.alerts.close()
        await self.recovery.close()
        await self.ledger.close()
        if self.capture is not None:
            await self.capture.close()
        await self.observer.close()
        await self.store.close()
        for provider in self.providers.values():
            await provider.close()
        await self.transport.close()
        if self._tracing:  # the spans still buffered are exported
            self._tracing = False
            await asyncio.to_thread(tracing.stop)

    def _background(self, loading: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(loading)
        self._starting.add(task)
        task.add_done_callback(_loaded(self._starting))

    async def prune_conversations(self) -> int:
        """Delete the conversations idle for longer than `conversations.retention_days`,
        and the stored Responses API responses older than that (every replica may: it
        is idempotent). The conversations deleted."""
        days = self.config.conversations.retention_days
        if days is None:
            return 0
        before = self.clock() - days * 86400
        n = await self.outages.open("conversations", "retention: tried again next round",
                                    self.store.conversations.prune(before))
        if n:
            log.info("retention: deleted %d conversation(s) idle for %g days", n, days)
        gone = await self.outages.open("responses", "retention: tried again next round",
                                       self.store.responses.prune(before))
        if gone:
            log.info("retention: deleted %d stored response(s) older than %g days", gone, days)
        return n or 0

    async def _prune_every(self, seconds: float) -> None:
        while True:
            await self.prune_conversations()
            await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a reload did: the sections it changed, and the fields it could not."""

    changed: list[str]
    needs_restart: list[str]


def _loaded(loading: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        loading.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failure was logged where it happened

    return done


def _caches(config: Config) -> bool:
    return any(for_alias(config.cache, mc.cache).enabled for mc in config.models.values())


def _sentence_model() -> SentenceModel:
    """The bundled embedding model, imported (numpy and all) and loaded on first use:
    the semantic cache's, so one copy serves both."""
    from tollway.cache.embed import default_embedder

    return default_embedder()
