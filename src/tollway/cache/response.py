"""The response cache on the request path: look up before routing, remember after a
successful answer. It fails open: a store error or a call slower than
`cache.timeout_ms` is logged and treated as a miss, and after a few failures in a row
the store is left alone for a while, so a dead cache costs nothing per request.

Lookup order: the exact key; then, when the alias has the semantic cache on and the
request ends with a plain user turn that is not about the present ("today", "latest",
a date), its embedding is compared within its partition, and a candidate above the
threshold is served only if the verification step finds no difference in negation,
numbers, dates or named entities.

With `across_conversations` on (it needs the semantic cache's model), a latest turn
that stands alone by the rules (cache/standalone.py) and by meaning (continuity.py: not
about the same thing as the turns just before it) is looked up next under its
context-free keys (keys.py), exactly and then by meaning, and its answer is stored
under them as well as under its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tollway.accounting.settlement import Answered, Outcome, Release, Settlement
from tollway.cache import entry as entries
from tollway.cache.controls import AliasCache, CacheAsk, bypass_reason, for_alias
from tollway.cache.entry import CachedAnswer
from tollway.cache.keys import Keys, context_free_keys, embedding_keys, keys_of
from tollway.cache.recent import RecentEmbeddings
from tollway.config import Config
from tollway.policy.auth import Caller
from tollway.store.base import CacheStore
from tollway.types import ChatRequest, EmbeddingRequest
from tollway.wire.sse import body_of

if TYPE_CHECKING:
    import numpy as np

    from tollway.cache.index import Partition, SemanticEntry

log = logging.getLogger("tollway.cache")
T = TypeVar("T")

FAILURES_TO_PAUSE = 3  # consecutive store failures before the store is skipped
PAUSE_SECONDS = 5.0
SYNC_SECONDS = 0.25  # how stale a partition's view of the shared log may get
CANDIDATES = 4  # semantic candidates checked per lookup, best first


@dataclass(slots=True)
class Lookup:
    status: str  # hit | semantic-hit | miss | bypass (the x-tollway-cache header)
    keys: Keys | None = None
    settings: AliasCache | None = None
    ask: CacheAsk | None = None
    found: CachedAnswer | None = None
    similarity: float | None = None
    vector: np.ndarray | None = None  # the query's embedding, kept for remembering it
    # The context-free keys of a stand-alone latest turn (across_conversations), and
    # whether a hit was found under them (another conversation's answer).
    across: Keys | None = None
    shared: bool = False


class ResponseCache:
    def __init__(self, config: Config, store: CacheStore, clock: Callable[[], float],
                 on_error: Callable[[], None]) -> None:
        self.config = config.cache
        self.store = store
        self.clock = clock
        self._on_error = on_error
        self._settings = {alias: for_alias(self.config, mc.cache)
                          for alias, mc in config.models.items()}
        self.semantic = any(s.semantic for s in self._settings.values())
        self._timeout = self.config.timeout_ms / 1000
        self._failures = 0
        self._paused_until = 0.0
        self._partitions: dict[str, Partition] = {}
        self._syncing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recent = RecentEmbeddings()
        # One thread for the embedding model: CPU-bound, and off the event loop.
        self._embedder = (ThreadPoolExecutor(1, thread_name_prefix="tollway-embed")
                          if self.semantic else None)

    def reconfigure(self, config: Config) -> bool:
        """A reloaded configuration's settings, the entries and the semantic index kept;
        False (nothing changed) when it wants the semantic cache's model and this cache
        started without it: loading it is a restart's."""
        settings = {alias: for_alias(config.cache, mc.cache)
                    for alias, mc in config.models.items()}
        if self._embedder is None and any(s.semantic for s in settings.values()):
            return False
        self.config, self._settings = config.cache, settings
        self.semantic = any(s.semantic for s in settings.values())
        self._timeout = self.config.timeout_ms / 1000
        return True

    def applies(self, alias: str) -> bool:
        s = self._settings.get(alias)
        return s is not None and s.enabled

    async def start(self) -> None:
        if self._embedder is not None:  # load the model before the first request needs it
            from tollway.cache.embed import default_embedder

            try:
                await asyncio.get_running_loop().run_in_executor(self._embedder,
                                                                 default_embedder)
            except Exception:
                log.exception("the semantic cache's embedding model did not load")
                raise

    async def drain(self) -> None:
        """Wait for the background reads in flight (tests; shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        if self._embedder is not None:
            self._embedder.shutdown()

    async def lookup_embeddings(self, req: EmbeddingRequest, alias: str, caller: Caller,
                                ask: CacheAsk | None, served: str) -> Lookup:
        """An embeddings request: the exact key only (its inputs are not a turn to
        match by meaning). `alias` and `served` as for `lookup`."""
        if ask is not None and not ask.read and not ask.write:
            return Lookup("bypass")
        keys = embedding_keys(req, served or alias, self._tenant(caller),
                              ask.namespace if ask else "", self.config.version)
        look = Lookup("miss", keys, self._settings[alias], ask)
        if ask is not None and not ask.read:
            return look
        raw = await self._call(self.store.get(keys.exact))
        found = _decoded(raw, self.clock()) if raw is not None else None
        if found is not None:
            look.status, look.found = "hit", found
        return look

    async def lookup(self, req: ChatRequest, alias: str, caller: Caller,
                     ask: CacheAsk | None, served: str | None = None) -> Lookup:
        """`alias`: whose cache settings apply; `served`: the name the answer is for,
        when a wildcard alias serves many (answers of one model never answer another)."""
        settings = self._settings[alias]
        if bypass_reason(req, self.config, ask) is not None:
            return Lookup("bypass")
        scope = (served or alias, self._tenant(caller), ask.namespace if ask else "",
                 self.config.version)
        keys = keys_of(req, *scope)
        look = Lookup("miss", keys, settings, ask)
        across = context_free_keys(req, *scope) if settings.across else None
        if ask is not None and not ask.read:
            look.across = await self._shareable(look, across, req)
            return look
        now = self.clock()
        raw = await self._call(self.store.get(keys.exact))
        found = _decoded(raw, now) if raw is not None else None
        if found is not None:
            look.status, look.found = "hit", found
            return look
        look.across = await self._shareable(look, across, req)
        partitions = [keys] if look.across is None else [keys, look.across]
        if look.across is not None:
            raw = await self._call(self.store.get(look.across.exact))
            found = _decoded(raw, now) if raw is not None else None
            if found is not None:
                look.status, look.found, look.shared = "hit", found, True
                return look
        if settings.semantic and keys.text is not None:
            try:
                for k in partitions:
                    if await self._semantic(look, keys.text, k.partition, now):
                        look.shared = k is look.across
                        break
            except Exception:  # the model failed: answer without the semantic cache
                self._on_error()
                log.exception("semantic cache lookup failed")
        return look

    def filler(self, look: Lookup) -> Release:
        """Keep the answer a miss led to, once the caller has received it whole (not
        cut, not failed, not abandoned)."""

        async def fill(outcome: Outcome, s: Settlement) -> None:
            if not isinstance(outcome, Answered) or s.cut:
                return
            answer = outcome.answer
            body = body_of(answer)
            if body is not None:
                await self.remember(look, CachedAnswer(
                    model=answer.model, provider=answer.deployment.provider, body=body,
                    usage=s.usage, cost_usd=s.usd, expires_at=0.0))

        return fill

    async def remember(self, look: Lookup, answer: CachedAnswer) -> None:
        """Store an answer the caller received in full. Called after the reply was sent;
        the local index and the embedded store see it before the first await, so the
        next request finds it."""
        keys, settings = look.keys, look.settings
        if keys is None or settings is None or (look.ask is not None and not look.ask.write):
            return
        ttl = look.ask.ttl if look.ask is not None and look.ask.ttl else settings.ttl
        answer.expires_at = self.clock() + ttl
        every = [keys] if look.across is None else [keys, look.across]
        items = []
        if look.vector is not None and keys.text is not None:
            from tollway.cache.index import SemanticEntry
            from tollway.cache.normalize import canonical

            for k in every:
                item = SemanticEntry(id=k.exact, text=keys.text, vector=look.vector.tobytes(),
                                     expires_at=answer.expires_at, canon=canonical(keys.text))
                self._partition(k.partition).add(item)
                items.append((k.partition, item))
        body = entries.encode(answer)
        for k in every:
            await self._call(self.store.put(k.exact, body, ttl))
        if items:
            from tollway.cache.index import encode_entry

            for partition, item in items:
                await self._call(self.store.append(partition, encode_entry(item), ttl,
                                                   self.config.semantic.max_entries))

    async def _semantic(self, look: Lookup, text: str, partition: str, now: float) -> bool:
        """Look for `text` by meaning in `partition`; True on a hit. A near-repeat (the
        same canonical form, cache/normalize.py) is found first, by a dict lookup and
        without the model; then the nearest entries by embedding, each verified."""
        from tollway.cache.normalize import canonical
        from tollway.cache.verify import (
            COSINE_FLOOR,
            accept,
            is_temporal,
            near_repeat,
            threshold_of,
        )

        assert look.settings is not None
        part = self._partition(partition)
        await self._sync(partition, part)
        same = part.same_form(canonical(text))
        if same is not None and same.expires_at > now and near_repeat(text, same.text) and (
                await self._serve(look, same, 1.0, now)):
            return True
        if is_temporal(text):
            return False
        if look.vector is None:
            look.vector = (await self._embed_many([text]))[0]
        threshold = threshold_of(look.settings.mode, look.settings.threshold)
        for cand in part.search(look.vector, COSINE_FLOOR, CANDIDATES):
            item = cand.entry
            if item.expires_at <= now or not accept(text, item.text, cand.similarity, threshold):
                continue
            if await self._serve(look, item, cand.similarity, now):
                return True
        return False

    async def _serve(self, look: Lookup, item: SemanticEntry, similarity: float,
                     now: float) -> bool:
        """Fetch the entry's answer; True (and `look` filled in) if it is still there."""
        raw = await self._call(self.store.get(item.id))
        found = _decoded(raw, now) if raw is not None else None
        if found is None:
            return False
        look.status, look.found, look.similarity = "semantic-hit", found, similarity
        return True

    async def _shareable(self, look: Lookup, across: Keys | None, req: ChatRequest
                         ) -> Keys | None:
        """`across` when the turn the rules let stand alone does not lean on the
        conversation by meaning either (cache/continuity.py); None when it does, or
        when that cannot be told (no model, or it failed: the turn is not shared)."""
        if across is None or across.text is None or self._embedder is None:
            return None
        from tollway.cache.continuity import context_texts, leans_on_context

        try:  # one model run for the query and whichever recent turns are not kept
            vectors = await self._embed_many([across.text,
                                              *context_texts(req.messages[:-1])])
        except Exception:
            self._on_error()
            log.exception("the continuity check failed; the turn is not shared")
            return None
        look.vector = vectors[0]  # the semantic lookup's own
        return None if leans_on_context(vectors[0], vectors[1:]) else across

    async def _embed_many(self, texts: list[str]) -> list[np.ndarray]:
        assert self._embedder is not None  # (a semantic lookup has its thread)
        return await self._recent.embed(self._embedder, texts)

    def _partition(self, name: str) -> Partition:
        part = self._partitions.get(name)
        if part is None:
            from tollway.cache.index import Partition

            part = self._partitions[name] = Partition(self.config.semantic.max_entries)
        return part

    async def _sync(self, name: str, part: Partition) -> None:
        """Read the entries other replicas (or an earlier run) added. The first read
        of a partition is waited for; later ones run in the background."""
        mono = time.monotonic()
        if mono - part.synced_at < SYNC_SECONDS or name in self._syncing:
            return
        if part.synced_at < 0:
            await self._read_log(name, part)
            return
        self._syncing.add(name)
        task = asyncio.create_task(self._read_log(name, part))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_log(self, name: str, part: Partition) -> None:
        from tollway.cache.index import decode_entry

        try:
            got = await self._call(self.store.read(name, part.cursor))
            if got is not None:
                items, part.cursor = got
                for raw in items:
                    part.add(decode_entry(raw))
            part.synced_at = time.monotonic()
        finally:
            self._syncing.discard(name)

    def _tenant(self, caller: Caller) -> str:
        scope = self.config.scope
        if scope == "global":
            return "global"
        owner = (f"key:{caller.key.lineage}" if caller.key is not None
                 else "master" if caller.master else "open")
        if scope == "team" and caller.team:
            return f"team:{caller.team}"
        if scope == "user":
            return f"{owner}/user:{caller.user or ''}"
        return owner

    async def _call(self, op: Awaitable[T]) -> T | None:
        """A store call within the time budget; None when it failed or was skipped."""
        if self._paused_until > time.monotonic():
            if asyncio.iscoroutine(op):
                op.close()
            return None
        try:
            # Not wait_for: that would run `op` as a task of its own, a loop turn later.
            async with asyncio.timeout(self._timeout):
                out = await op
        except Exception as e:  # fail open: log, count, carry on without the cache
            self._failures += 1
            self._on_error()
            if self._failures >= FAILURES_TO_PAUSE:
                self._paused_until = time.monotonic() + PAUSE_SECONDS
                log.warning("cache store failing (%s: %s); skipping it for %.0f s",
                            type(e).__name__, e, PAUSE_SECONDS)
            else:
                log.warning("cache store call failed (%s: %s)", type(e).__name__, e)
            return None
        self._failures = 0
        return out


def _decoded(raw: bytes, now: float) -> CachedAnswer | None:
    try:
        found = entries.decode(raw)
    except Exception:  # written by another version, or damaged: a miss
        return None
    return found if found.expires_at > now else None
