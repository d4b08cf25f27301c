"""In-process stand-ins the stage tests share: canned replies and streams, a provider
that answers with them (or fails), a store part that is down, and the failure counter
`Outages` reports to. Nothing here starts a server or touches the network."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tollway.errors import TollwayError
from tollway.store.outage import Outages
from tollway.types import (
    Answer,
    ChatRequest,
    Deployment,
    FrameStream,
    Message,
    Reply,
    ReplyStream,
    Role,
    Usage,
)
from tollway.wire import sse

DEP = Deployment(provider="fake", model="fake-model")


def usage(prompt: int, completion: int) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion)


def request(*texts: str, **kw: Any) -> ChatRequest:
    """A request whose messages alternate user and assistant, starting with the user."""
    roles: tuple[Role, Role] = ("user", "assistant")
    return ChatRequest(model=kw.pop("model", "m"), messages=[
        Message(role=roles[i % 2], content=t) for i, t in enumerate(texts)], **kw)


def body(text: str, model: str = DEP.model) -> dict[str, Any]:
    """A chat.completion whose one choice says `text`."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]}


def reply(text: str, model: str = DEP.model, used: Usage | None = None) -> Reply:
    return Reply(body(text, model), model, used)


def stream(deltas: list[str], model: str = DEP.model, used: Usage | None = None
           ) -> ReplyStream:
    """A stream of one content event per delta, then the finish; like a provider's, it
    records what it forwarded in `received` and has its usage once it has ended."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": model}
    events = [sse.frame({**head, "choices": [{"index": 0, "delta": {"content": d},
                                              "finish_reason": None}]}) for d in deltas]
    events.append(sse.frame({**head, "choices": [{"index": 0, "delta": {},
                                                  "finish_reason": "stop"}]}))
    out = ReplyStream(frames=sse.no_frames(), model=model)

    async def frames() -> FrameStream:
        for blob in events:
            out.received.append(blob)
            yield blob
        out.usage = used

    out.frames = frames()
    return out


async def text_of(s: ReplyStream) -> str:
    """The content a client reads from a stream, to its end."""
    events, _ = sse.split_events(b"".join([blob async for blob in s.frames]))
    return "".join(choice["delta"].get("content") or ""
                   for _, data in events
                   for choice in orjson.loads(data).get("choices") or ())


@dataclass
class FakeProvider:
    """Answers every call with a canned reply (or stream, for a streaming request)
    saying which model answered; the deployments (or models) in `fail` raise their
    error instead (only the first time, with `once`)."""

    name: str = "fake"
    fail: dict[Deployment | str, TollwayError] = field(default_factory=dict)
    once: bool = False
    calls: list[Deployment] = field(default_factory=list)

    async def complete(self, req: ChatRequest, dep: Deployment) -> Reply:
        self._called(dep)
        return reply(f"from {dep.model}", dep.model, usage(10, 5))

    async def stream(self, req: ChatRequest, dep: Deployment) -> ReplyStream:
        self._called(dep)
        return stream([f"from {dep.model}"], dep.model, usage(10, 5))

    async def close(self) -> None:
        pass

    def _called(self, dep: Deployment) -> None:
        self.calls.append(dep)
        for k in (dep, dep.model):
            if k in self.fail:
                raise self.fail.pop(k) if self.once else self.fail[k]


class Down:
    """A store part whose every call fails as an unreachable store's does."""

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError(f"store down ({name})")
        return unreachable


def outages() -> tuple[Outages, list[str]]:
    """An `Outages` and the parts it counted as failed, in order."""
    failed: list[str] = []
    return Outages(failed.append), failed


def answer(text: str, model: str = DEP.model, used: Usage | None = None) -> Answer:
    """A JSON answer from a deployment of `model`."""
    return Answer(Deployment(provider="fake", model=model), reply=reply(text, model, used))
