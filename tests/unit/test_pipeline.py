"""The request path in-process, one test per way a request can end: what `finish`
priced, and exactly what it settled and released in the store (a budget hold, a
rate-limit entry), against a fake provider and the embedded store with its budget and
limit parts recording every call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tollway import config
from tollway.accounting.settlement import Aborted, Answered, Failed, Settlement
from tollway.errors import BudgetExceeded, InvalidRequest, TollwayError, UpstreamError
from tollway.gateway import Gateway
from tollway.gateway.call import Call
from tollway.policy.auth import Caller
from tollway.store.base import Claim, Reservation
from tollway.store.embedded import EmbeddedStore
from tollway.types import ChatRequest, Deployment, FrameStream, Message, Reply, ReplyStream, Usage
from tollway.wire.sse import no_frames

NOW = 1_800_000_000.0
PRICE_IN, PRICE_OUT = 1.0, 2.0  # USD per 1M tokens
WORDS = ["Hello", " there", ",", " friend", "."]


def usd(prompt: int, completion: int) -> float:
    return (prompt * PRICE_IN + completion * PRICE_OUT) / 1e6


class FakeProvider:
    """An OpenAI-shaped upstream: a fixed reply, or a stream of one word per event with
    usage at the end; `fail` makes the next call raise."""

    name = "openai"

    def __init__(self) -> None:
        self.calls = 0
        self.fail: TollwayError | None = None
        self.usage = Usage(prompt_tokens=20, completion_tokens=5, total_tokens=25)

    async def complete(self, req: ChatRequest, dep: Deployment) -> Reply:
        self._called()
        body = {"id": "c1", "object": "chat.completion", "model": dep.model, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)},
             "finish_reason": "stop"}], "usage": self.usage.to_openai()}
        return Reply(body=body, model=dep.model, usage=self.usage)

    async def stream(self, req: ChatRequest, dep: Deployment) -> ReplyStream:
        self._called()
        out = ReplyStream(frames=no_frames(), model=dep.model)
        out.frames = self._frames(dep, out)
        return out

    async def _frames(self, dep: Deployment, out: ReplyStream) -> FrameStream:
        for i, word in enumerate(WORDS):
            chunk = {"id": "c1", "object": "chat.completion.chunk", "model": dep.model,
                     "choices": [{"index": 0, "delta": {"content": word},
                                  "finish_reason": "stop" if i == len(WORDS) - 1 else None}]}
            blob = b"data: " + orjson.dumps(chunk) + b"\n\n"
            out.received.append(blob)
            yield blob
        out.usage = self.usage

    def _called(self) -> None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail

    async def close(self) -> None:
        """Nothing held."""


@dataclass
class Recording:
    """A store part that records what was asked of it, then asks the real one."""

    inner: Any
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # methods that fail as if unreachable

    async def reserve(self, hold_id: str, claims: Sequence[Claim], expires_at: float,
                      now: float) -> Reservation:
        self.calls.append(("reserve", [(c.counter, c.amount) for c in claims]))
        got: Reservation = await self.inner.reserve(hold_id, claims, expires_at, now)
        return got

    async def settle(self, hold_id: str, charges: Sequence[tuple[str, float]]) -> bool:
        self.calls.append(("settle", list(charges)))
        if "settle" in self.down:
            raise ConnectionError("the budget store went away")
        settled: bool = await self.inner.settle(hold_id, charges)
        return settled

    async def levels(self, counters: Sequence[str], now: float) -> list[float]:
        levels: list[float] = await self.inner.levels(counters, now)
        return levels

    async def add(self, counter: str, amount: float) -> float:
        level: float = await self.inner.add(counter, amount)
        return level

    async def take(self, entry_id: str, claims: Sequence[Claim], window: float,
                   now: float) -> Reservation:
        self.calls.append(("take", [(c.counter, c.amount) for c in claims]))
        got: Reservation = await self.inner.take(entry_id, claims, window, now)
        return got

    async def adjust(self, entry_id: str, amounts: Sequence[tuple[str, float]]) -> None:
        self.calls.append(("adjust", list(amounts)))
        await self.inner.adjust(entry_id, amounts)

    async def free_at(self, counter: str, need: float, limit: float, window: float,
                      now: float) -> float:
        at: float = await self.inner.free_at(counter, need, limit, window, now)
        return at


@dataclass
class Bed:
    gw: Gateway
    provider: FakeProvider
    budgets: Recording
    limits: Recording

    def call(self) -> Call:
        return Call("req-1", caller=Caller(ip="10.0.0.1"))

    def request(self, text: str = "Say hello.", *, stream: bool = False,
                max_tokens: int = 10) -> ChatRequest:
        return ChatRequest(model="m", max_tokens=max_tokens, stream=stream,
                           messages=[Message(role="user", content=text)])

    async def rows(self) -> list[Any]:
        await self.gw.ledger.flush()
        return await self.gw.store.ledger.rows()


USD_COUNTER = "global//usd/d20270115"
TOKENS_COUNTER = "rate/ip/10.0.0.1/tokens"


@pytest.fixture
async def bed(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Bed]:
    sections: dict[str, Any] = getattr(request, "param", {})
    cfg = config.parse({
        "models": {"m": {"deployments": [{"provider": "openai", "model": "fake-model",
                                          "api_key": "k"}]}},
        "prices": {"fake-model": {"input": PRICE_IN, "output": PRICE_OUT}},
        "store": {"path": str(tmp_path)},
        "budgets": {"global": [{"usd": 1.0, "period": "day"}]},
        "rate_limits": {"ips": {"rpm": 100, "tpm": 100_000}},
        **sections,
    }, env={})
    store = EmbeddedStore(str(tmp_path))
    budgets, limits = Recording(store.budgets), Recording(store.limits)
    store.budgets = budgets
    store.limits = store.fallback_limits = limits
    provider = FakeProvider()
    gw = Gateway(cfg, providers={"openai": provider, "anthropic": provider,
                                 "local": provider}, store=store, clock=lambda: NOW)
    await gw.start()
    try:
        yield Bed(gw, provider, budgets, limits)
    finally:
        await gw.close()


def held(b: Bed) -> list[tuple[str, float]]:
    """What the reserve claimed, as (counter, amount)."""
    reserves = [c for c in b.budgets.calls if c[0] == "reserve"]
    assert len(reserves) == 1
    claims: list[tuple[str, float]] = reserves[0][1]
    return claims


async def test_an_answer_settles_its_hold_and_rate_limit_to_the_real_usage(bed: Bed) -> None:
    call, req = bed.call(), bed.request()
    answer = await bed.gw.chat(call, req)
    s = await bed.gw.finish(call, Answered(answer))
    cost = usd(20, 5)
    assert s == Settlement(usage=bed.provider.usage, cost_usd=cost)
    worst_tokens = call.plan.worst_tokens if call.plan else 0
    assert held(bed) == [(USD_COUNTER, call.plan.worst_usd if call.plan else 0)]
    assert bed.budgets.calls[-1] == ("settle", [(USD_COUNTER, cost)])
    assert bed.limits.calls[0][0] == "take" and (TOKENS_COUNTER, worst_tokens) in \
        bed.limits.calls[0][1]
    assert bed.limits.calls[-1] == ("adjust", [(TOKENS_COUNTER, 25.0)])
    assert call.releases.pending == []  # everything taken was given back
    [row] = await bed.rows()
    assert (row.outcome, row.status, row.cost_usd, row.input_tokens) == ("ok", 200, cost, 20)
    # finish runs once: a second call changes nothing and writes no second row.
    assert await bed.gw.finish(call, Failed(UpstreamError("late"))) == s
    assert len(await bed.rows()) == 1


async def test_a_batch_lines_row_names_its_batch(bed: Bed) -> None:
    call = Call("req-1", caller=Caller(ip="10.0.0.1"), batch="batch_1")
    await bed.gw.finish(call, Answered(await bed.gw.chat(call, bed.request())))
    interactive = bed.call()
    await bed.gw.finish(interactive, Answered(await bed.gw.chat(interactive, bed.request())))
    assert [(r.batch_id, r.kind) for r in await bed.rows()] == [("batch_1", "chat"),
                                                                 (None, "chat")]


@pytest.mark.parametrize("bed", [{"server": {"max_input_tokens": 5}}], indirect=True)
async def test_an_error_before_sending_takes_nothing_and_costs_nothing(bed: Bed) -> None:
    call = bed.call()
    with pytest.raises(InvalidRequest) as e:  # refused by pre-flight: input too long
        await bed.gw.chat(call, bed.request("A question far longer than five tokens."))
    s = await bed.gw.finish(call, Failed(e.value))
    assert e.value.code == "input_too_long"
    assert s == Settlement(usage=None, cost_usd=0.0)
    assert (bed.budgets.calls, bed.limits.calls, bed.provider.calls) == ([], [], 0)
    assert call.releases.pending == []
    [row] = await bed.rows()
    assert (row.outcome, row.status, row.cost_usd) == ("refused", 400, 0.0)


async def test_an_upstream_error_releases_the_hold_at_zero(bed: Bed) -> None:
    bed.provider.fail = UpstreamError("Upstream openai/fake-model failed with 500: boom")
    call = bed.call()
    with pytest.raises(UpstreamError) as e:
        await bed.gw.chat(call, bed.request())
    s = await bed.gw.finish(call, Failed(e.value))
    assert s.cost_usd == 0.0 and s.usage is None
    assert len(held(bed)) == 1
    assert bed.budgets.calls[-1] == ("settle", [(USD_COUNTER, 0.0)])
    assert bed.limits.calls[-1] == ("adjust", [(TOKENS_COUNTER, 0.0)])
    assert await bed.gw.store.budgets.levels([USD_COUNTER], NOW) == [0.0]
    [row] = await bed.rows()
    assert (row.outcome, row.status, row.model) == ("error", 502, "fake-model")


async def test_a_client_abort_mid_stream_bills_the_prompt_and_what_was_generated(
        bed: Bed) -> None:
    call = bed.call()
    answer = await bed.gw.chat(call, bed.request(stream=True))
    assert answer.stream is not None
    frames = answer.stream.frames
    got = [await anext(frames), await anext(frames)]  # two words, then the client leaves
    await frames.aclose()
    s = await bed.gw.finish(call, Aborted(answer))
    assert len(got) == 2 and s.estimated and s.usage is not None
    prompt = call.plan.input_tokens if call.plan else None
    assert prompt and (s.usage.prompt_tokens, s.usage.completion_tokens) == (prompt, 2)
    assert s.cost_usd == usd(prompt, 2)
    assert bed.budgets.calls[-1] == ("settle", [(USD_COUNTER, usd(prompt, 2))])
    assert bed.limits.calls[-1] == ("adjust", [(TOKENS_COUNTER, float(prompt + 2))])
    [row] = await bed.rows()
    assert (row.outcome, row.status, row.estimated) == ("aborted", 499, True)


@pytest.mark.parametrize("bed", [{"cache": {"enabled": True}}], indirect=True)
async def test_a_cache_hit_costs_nothing_and_holds_nothing(bed: Bed) -> None:
    first = bed.call()
    await bed.gw.finish(first, Answered(await bed.gw.chat(first, bed.request())))
    assert bed.gw.cache is not None
    await bed.gw.cache.drain()
    bed.budgets.calls.clear()
    bed.limits.calls.clear()
    call = bed.call()
    answer = await bed.gw.chat(call, bed.request())
    s = await bed.gw.finish(call, Answered(answer))
    assert call.cache is not None and call.cache.status == "hit"
    assert s == Settlement(usage=None, cost_usd=0.0, saved_usd=usd(20, 5))
    assert bed.provider.calls == 1 and bed.budgets.calls == []  # no upstream, no hold
    assert bed.limits.calls[0] == ("take", [("rate/ip/10.0.0.1/requests", 1.0),
                                            (TOKENS_COUNTER, 0.0)])
    assert len(bed.limits.calls) == 1  # settled to 0 tokens: nothing to adjust
    rows = await bed.rows()
    assert (rows[-1].cache, rows[-1].provider, rows[-1].saved_usd) == ("hit", "cache",
                                                                        usd(20, 5))


@pytest.mark.parametrize("bed", [{"budgets": {"global": [{"usd": 0.00001}]}}], indirect=True)
async def test_a_budget_refusal_sends_nothing_and_leaves_no_hold(bed: Bed) -> None:
    call = bed.call()
    with pytest.raises(BudgetExceeded) as e:
        await bed.gw.chat(call, bed.request(max_tokens=100))
    s = await bed.gw.finish(call, Failed(e.value))
    assert s == Settlement(usage=None, cost_usd=0.0)
    assert bed.provider.calls == 0
    assert [c[0] for c in bed.budgets.calls] == ["reserve"]  # refused: nothing to settle
    assert bed.limits.calls[-1] == ("adjust", [(TOKENS_COUNTER, 0.0)])  # taken, given back
    assert await bed.gw.store.budgets.levels([USD_COUNTER], NOW) == [0.0]
    [row] = await bed.rows()
    assert (row.outcome, row.status, row.error) == ("refused", 429, "budget_exceeded")


async def test_a_failed_release_does_not_stop_the_others(bed: Bed) -> None:
    """The budget store failing to settle is logged; the rate-limit entry is still
    settled and the ledger row still written."""
    call = bed.call()
    answer = await bed.gw.chat(call, bed.request())
    bed.budgets.down.add("settle")
    s = await bed.gw.finish(call, Answered(answer))
    assert bed.budgets.calls[-1] == ("settle", [(USD_COUNTER, s.usd)])
    assert bed.limits.calls[-1] == ("adjust", [(TOKENS_COUNTER, float(s.tokens))])
    assert len(await bed.rows()) == 1
