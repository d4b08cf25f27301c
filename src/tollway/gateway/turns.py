"""Routing on the latest turn: a request for an alias with `route_by_turn`, by its
plain name, goes to the alias's cheap tier when its latest user turn needs no more
(policy/complexity.py decides). A tier asked for (`tier:NAME`, x-tollway-tier) is the
caller's own choice and is never second-guessed.

The rules cost microseconds and decide most turns; the rest are embedded by the bundled
model on one thread of their own (CPU-bound, off the event loop), loaded at start only
when some alias uses the classifier. Aliases without `route_by_turn` pay one dict
lookup."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tollway.cache import standalone
from tollway.cache.continuity import context_texts, leans_on_context
from tollway.config import Config, RouteByTurn
from tollway.gateway.routes import Route, Routes
from tollway.policy import complexity, tiers
from tollway.types import ChatRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TurnDecision:
    """What the reply headers and the ledger say of it."""

    cheap: bool
    reason: str  # complexity.Verdict.reason
    asked: str  # the alias asked for (x-tollway-downgraded-from when sent cheap)


class TurnRouter:
    def __init__(self, config: Config, routes: Routes, earlier: TurnRouter | None = None
                 ) -> None:
        """`earlier`: the one a reload replaces, whose classifier and thread it takes
        over (the model is loaded once per process)."""
        self.config = config
        self._routes = routes
        self._own: dict[str, RouteByTurn] = {alias: mc.route_by_turn
                                             for alias, mc in config.models.items()
                                             if mc.route_by_turn is not None}
        wants = any(r.classifier for r in self._own.values())
        self._classifier: complexity.Classifier | None
        self._pool: ThreadPoolExecutor | None
        if earlier is not None and earlier._pool is not None:
            self._classifier, self._pool = earlier._classifier, earlier._pool
        else:
            self._classifier = complexity.load_classifier() if wants else None
            self._pool = (ThreadPoolExecutor(1, thread_name_prefix="tollway-turns")
                          if wants else None)

    def applies(self, alias: str, choice: tiers.TierChoice) -> bool:
        return choice.tier is None and alias in self._own

    async def start(self) -> None:
        """Load the embedding model before the first open turn needs it."""
        if self._pool is not None:
            from tollway.cache.embed import default_embedder

            await asyncio.get_running_loop().run_in_executor(self._pool, default_embedder)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def route(self, req: ChatRequest, route: Route, choice: tiers.TierChoice
                    ) -> tuple[Route, tiers.TierChoice, TurnDecision | None]:
        """The route and tier to serve this request, and the decision (None when the
        request has no latest user turn to judge)."""
        own = self._own[route.alias]
        latest = complexity.latest_user(req.messages)
        if latest is None:
            return route, choice, None
        text = latest.text()
        hard = complexity.hard_before(req.messages)
        if hard and await self._new_topic(text, req, own):
            hard = False  # judged on its own: the earlier hard exchange is not its context
        verdict = complexity.rules(text, hard, complexity.has_image(latest))
        if verdict is None:
            verdict = await self._classify(text, own)
        if verdict.strong:
            return route, choice, TurnDecision(False, verdict.reason, route.name)
        cheap = tiers.named(own.cheap_tier, self.config)
        return (self._routes.resolve(cheap.model), cheap,
                TurnDecision(True, verdict.reason, route.name))

    async def _new_topic(self, text: str, req: ChatRequest, own: RouteByTurn) -> bool:
        """Whether a turn in a conversation that needed the strong model stands alone —
        an FAQ asked after a hard question ("is there a Linux app?") — by the checks
        that let its answer be shared across conversations: no words pointing back, no
        answer to the assistant's question (cache/standalone.py), and not about what
        was just discussed (cache/continuity.py). What the user said of themselves,
        which keeps an answer from being shared, does not make the turn hard. Without
        the embedding model it cannot be told: the conversation stays hard."""
        pool = self._pool
        if not own.classifier or pool is None or standalone.depends_reason(
                text, req.messages[:-1]) not in (None, "situation"):
            return False
        from tollway.cache.embed import default_embedder

        def leans() -> bool:
            vectors = default_embedder().embed([text, *context_texts(req.messages[:-1])])
            return leans_on_context(vectors[0], list(vectors[1:]))

        return not await asyncio.get_running_loop().run_in_executor(pool, leans)

    async def _classify(self, text: str, own: RouteByTurn) -> complexity.Verdict:
        clf, pool = self._classifier, self._pool
        if not own.classifier or clf is None or pool is None:
            return complexity.Verdict(True, "undecided")
        from tollway.cache.embed import default_embedder

        def score() -> complexity.Verdict:
            return clf.verdict(default_embedder().embed([text])[0])

        return await asyncio.get_running_loop().run_in_executor(pool, score)
