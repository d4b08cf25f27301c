"""A conversation keeps the reply as the client saw it: with `restore_pii`, a stream is
restored only on its way out, and what it assembles to still has the placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.fakes import reply, request, stream, text_of, usage
from tollway.accounting.settlement import Answered
from tollway.config import parse
from tollway.gateway.assembly import Gateway
from tollway.gateway.call import Asks, Call
from tollway.store.embedded import EmbeddedStore
from tollway.types import ChatRequest, Deployment, Reply, ReplyStream


class Placeholder:
    """A model that answers with the placeholder it was sent."""

    name = "local"

    async def complete(self, req: ChatRequest, dep: Deployment) -> Reply:
        return reply("Your address is [EMAIL_1].", dep.model, usage(10, 5))

    async def stream(self, req: ChatRequest, dep: Deployment) -> ReplyStream:
        return stream(["Your address is [EMAIL_1]."], dep.model, usage(10, 5))

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_conversation_keeps_the_reply_as_the_client_saw_it(
        tmp_path: Path, streaming: bool) -> None:
    cfg = parse({"models": {"m": {"deployments": [{"provider": "local", "model": "x"}]}},
                 "guards": {"pii": "redact", "restore_pii": True},
                 "store": {"path": str(tmp_path)}}, env={})
    store = EmbeddedStore(str(tmp_path))
    gw = Gateway(cfg, providers={"local": Placeholder()}, store=store)
    try:
        call = Call("r1", asks=Asks(stored_conversation="c1"))
        got = await gw.chat(call, request("my email is jane@example.com", model="m",
                                          stream=streaming))
        if got.stream is not None:
            assert await text_of(got.stream) == "Your address is jane@example.com."
        await gw.finish(call, Answered(got))
        kept = await store.conversations.load(call.caller.owner, "c1")
        assert kept is not None
        assert kept.turns[-1] == (b'{"role":"assistant","content":'
                                  b'"Your address is jane@example.com."}')
    finally:
        await gw.close()
