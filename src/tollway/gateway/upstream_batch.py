"""A batch's lines through the provider's own batch API, at its batch price (a
deployment with `batches: upstream`, or `auto` on OpenAI's own API).

Each line still goes through the whole request path — route, limits, guards, caps,
cache, its prepaid hold, its ledger row — and only at the send step is it queued here
instead of sent: the lines of one Tollway batch for one deployment that arrive
together (within `GATHER_SECONDS` of each other) go up as one provider batch, and each
waits for its own answer, which comes back marked `Reply.batch` and so is priced at
the batch rates. An upstream without a batch API (a 404 on its files endpoint) is
remembered, and its lines are sent one by one as interactive requests.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import orjson

from tollway import tasks
from tollway.errors import UpstreamError
from tollway.providers import openai_batch
from tollway.providers.base import BatchesApi, LineResult, Provider, error_from_status
from tollway.types import ChatRequest, Deployment, EmbeddingRequest, Reply

log = logging.getLogger("tollway.batch")

GATHER_SECONDS = 0.5
MAX_LINES = 50_000  # OpenAI's limit per batch


@dataclass
class _Group:
    """Lines of one Tollway batch for one deployment and endpoint, not sent yet."""

    lines: list[tuple[str, bytes]] = field(default_factory=list)
    waiting: dict[str, asyncio.Future[LineResult]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


class UpstreamBatches:
    def __init__(self, providers: dict[str, Provider], poll_seconds: float) -> None:
        self.providers = providers
        self.poll_seconds = poll_seconds
        self._groups: dict[tuple[str, Deployment, str], _Group] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._no_api: set[Deployment] = set()  # answered 404 on /files: no batch API

    def deployment(self, deployments: list[Deployment]) -> Deployment | None:
        """The deployment a batch line goes to upstream: the route's first, when it has a
        batch API (otherwise the line is sent as an interactive request)."""
        dep = deployments[0] if deployments else None
        if (dep is None or not dep.batch_api or dep in self._no_api
                or not isinstance(self.providers.get(dep.provider), BatchesApi)):
            return None
        return dep

    async def send(self, batch_id: str, dep: Deployment,
                   req: ChatRequest | EmbeddingRequest) -> Reply:
        """Queue one line and wait for its answer (raises the line's error)."""
        api = self._api(dep)
        endpoint, body = api.batch_line(req, dep)
        loop = asyncio.get_running_loop()
        key = (batch_id, dep, endpoint)
        group = self._groups.setdefault(key, _Group())
        cid = str(len(group.lines))
        group.lines.append((cid, body))
        got = group.waiting[cid] = loop.create_future()
        if group.timer is not None:
            group.timer.cancel()
        if len(group.lines) >= MAX_LINES:
            self._flush(key)
        else:
            group.timer = loop.call_later(GATHER_SECONDS, self._flush, key)
        return api.batch_reply((await got).body, dep)

    def _flush(self, key: tuple[str, Deployment, str]) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        task = asyncio.create_task(self._run(key[1], key[2], group))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, dep: Deployment, endpoint: str, group: _Group) -> None:
        try:
            results = await self._api(dep).run_batch(dep, endpoint, group.lines,
                                                     self.poll_seconds)
        except openai_batch.NoBatchApi as e:
            self._no_api.add(dep)
            log.warning("%s; its batch lines are sent one by one", e.message)
            _fail(group, e)
            return
        except Exception as e:  # every line waiting fails with it
            err = e if isinstance(e, UpstreamError) else UpstreamError(
                f"The provider's batch API failed: {e}")
            _fail(group, err)
            return
        for cid, waiting in group.waiting.items():
            if waiting.done():
                continue
            found = results.get(cid)
            if found is None or found.status is None:
                waiting.set_exception(UpstreamError(
                    "The provider's batch ended without answering this line"
                    + (f": {found.body.get('message')}" if found is not None else ".")))
            elif found.status >= 400:
                waiting.set_exception(error_from_status(
                    found.status, orjson.dumps(found.body), {}, dep))
            else:
                waiting.set_result(found)

    def _api(self, dep: Deployment) -> BatchesApi:
        api = self.providers[dep.provider]
        assert isinstance(api, BatchesApi)
        return api

    async def close(self) -> None:
        """Lines waiting on a provider batch are given up (their process is stopping:
        the batch's lease keeps them from being sent again)."""
        for key in list(self._groups):
            self._flush(key)
        for task in list(self._running):
            await tasks.stop(task)


def _fail(group: _Group, err: Exception) -> None:
    for waiting in group.waiting.values():
        if not waiting.done():
            waiting.set_exception(err)
