"""Tollway as a library (`tollway.Gateway`, `tollway.testing.simulated`): the official
SDKs, sync and async, JSON and streaming, through the in-process gateway in front of
the simulator — budgets refuse, the cache hits, the ledger has the rows, as over HTTP;
many threads at once; and nothing left running after close."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pydantic
import pytest
import uvicorn

import tollway
from tollway.accounting.tokens import count_request
from tollway.testing import SimulatedGateway, simulated
from tollway.wire.openai import parse_chat_request

MASTER = "master-" + os.urandom(8).hex()
OUT = 16  # the simulator's answer length, and every request's max_tokens: its hold is
# exactly its cost, so a budget in tokens admits an exact number of requests
CAPPED = 3  # requests the `capped` feature's budget admits
THREADS, EACH = 8, 50
MESSAGES: Any = [{"role": "user", "content": "What is a toll road?"}]


def tokens_per_request() -> int:
    return count_request(parse_chat_request(orjson.dumps(
        {"model": "sim", "messages": MESSAGES})), "sim-model") + OUT


@pytest.fixture(scope="module")
def gw() -> Iterator[SimulatedGateway]:
    t = tokens_per_request()
    settings = {
        "models": {"sim-cached": {"cache": {"enabled": True}}},
        "budgets": {"features": {
            "capped": [{"tokens": CAPPED * t, "period": "total"}],
            "threads": [{"tokens": THREADS * EACH * t, "period": "total"}]}},
    }
    with simulated(settings, output_tokens=OUT, env={"TOLLWAY_MASTER_KEY": MASTER}) as g:
        yield g


@pytest.fixture
def sim(gw: SimulatedGateway) -> SimulatedGateway:
    gw.simulator.reset()
    gw.simulator.configure(ttft_ms=0, token_ms=0, output_tokens=OUT, next_faults=[])
    return gw


def ledger(gw: tollway.Gateway, **match: Any) -> list[dict[str, Any]]:
    """The rows (every field equal to `match`'s), through the admin API in-process."""
    with gw.http() as http:
        page = http.get("/admin/ledger", params={"limit": 10000}).json()
    return [r for r in page["data"] if all(r.get(k) == v for k, v in match.items())]


def test_openai_sync_json_and_stream(sim: SimulatedGateway) -> None:
    client = sim.openai()
    with sim.attribute(user="u-sync", feature="search"):
        raw = client.chat.completions.with_raw_response.create(
            model="sim", messages=MESSAGES, max_tokens=OUT)
        reply = raw.parse()
        chunks = list(client.chat.completions.create(
            model="sim", messages=MESSAGES, max_tokens=OUT, stream=True,
            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content and text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == OUT
    assert raw.headers["x-tollway-provider"] == "openai"
    cost = float(raw.headers["x-tollway-cost-usd"])
    assert cost > 0
    rows = ledger(sim, user="u-sync")
    assert [(r["feature"], r["stream"], r["output_tokens"]) for r in rows] == [
        ("search", False, OUT), ("search", True, OUT)]
    assert rows[0]["cost_usd"] == pytest.approx(cost)
    assert sim.simulator.stats()["requests"] == 2


def test_anthropic_sync_json_and_stream(sim: SimulatedGateway) -> None:
    client = sim.anthropic()
    with sim.attribute(user="u-claude"):
        msg = client.messages.create(model="sim-claude", max_tokens=OUT, messages=MESSAGES)
        with client.messages.stream(model="sim-claude", max_tokens=OUT,
                                    messages=MESSAGES) as stream:
            streamed = "".join(stream.text_stream)
            final = stream.get_final_message()
    assert msg.content[0].type == "text" and streamed == msg.content[0].text
    assert msg.usage.output_tokens == final.usage.output_tokens == OUT
    rows = ledger(sim, user="u-claude")
    assert [(r["provider"], r["stream"]) for r in rows] == [("anthropic", False),
                                                            ("anthropic", True)]


async def test_async_clients_on_the_callers_loop(sim: SimulatedGateway) -> None:
    oai, claude = sim.async_openai(), sim.async_anthropic()

    async def one(i: int) -> str:
        with sim.attribute(user=f"u-async-{i}"):  # each task its own context
            if i % 2:
                m = await claude.messages.create(model="sim-claude", max_tokens=OUT,
                                                 messages=MESSAGES)
                return m.content[0].text  # type: ignore[union-attr]
            stream = await oai.chat.completions.create(
                model="sim", messages=MESSAGES, max_tokens=OUT, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream
                            if c.choices])

    texts = await asyncio.gather(*(one(i) for i in range(10)))
    assert len(set(texts)) == 1 and texts[0]  # deterministic: one prompt, one answer
    emb = await oai.embeddings.create(model="sim-embed", input=["a", "b"])
    assert [len(d.embedding) for d in emb.data] == [1536, 1536]
    rows = ledger(sim, kind="chat")
    assert sorted(r["user"] for r in rows if (r["user"] or "").startswith("u-async")) == sorted(
        f"u-async-{i}" for i in range(10))
    await oai.close()
    await claude.close()


async def test_opened_and_closed_from_async_code(sim: SimulatedGateway,
                                                tmp_path: Path) -> None:
    cfg = {"models": {"sim": {"deployments": [{
        "provider": "openai", "model": "sim-model", "api_base": f"{sim.simulator.url}/v1",
        "api_key": "k"}]}}, "store": {"path": str(tmp_path)}}
    async with await tollway.Gateway.aopen(cfg, env={}) as gw:  # a mapping, as the YAML
        client = gw.async_openai()
        reply = await client.chat.completions.create(model="sim", messages=MESSAGES,
                                                     max_tokens=OUT)
        await client.close()
    assert reply.usage is not None and reply.usage.completion_tokens == OUT
    assert gw.closed


async def test_inside_a_process_that_serves_http(sim: SimulatedGateway) -> None:
    """A web app (uvicorn, on this test's loop) whose handler asks the gateway: the
    host's server and the gateway's loop run side by side."""
    client = sim.async_openai()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with sim.attribute(user="u-web", feature=scope["path"].strip("/")):
            r = await client.chat.completions.create(model="sim", messages=MESSAGES,
                                                     max_tokens=OUT)
        body = (r.choices[0].message.content or "").encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # listening now: requests wait in its backlog until uvicorn accepts
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as web:
        got = await asyncio.gather(*(web.get(f"/page-{i}") for i in range(6)))
    server.should_exit = True
    await serving
    sock.close()
    await client.close()
    assert {r.status_code for r in got} == {200} and len({r.text for r in got}) == 1
    assert sorted(r["feature"] for r in ledger(sim, user="u-web")) == [
        f"page-{i}" for i in range(6)]


class Verdict(pydantic.BaseModel):
    toll: bool
    reason: str


def test_responses_and_parse_through_the_same_path(sim: SimulatedGateway) -> None:
    client = sim.openai()
    with sim.attribute(user="u-features"):
        first = client.responses.create(model="sim", input="What is a toll road?",
                                        max_output_tokens=OUT)
        later = client.responses.create(model="sim", input="And a bridge?",
                                        previous_response_id=first.id,
                                        max_output_tokens=OUT)
        parsed = client.chat.completions.parse(model="sim", messages=MESSAGES,
                                               response_format=Verdict, max_tokens=200)
    assert first.output_text and later.output_text
    assert isinstance(parsed.choices[0].message.parsed, Verdict)
    # The stored response was continued: the second call sent the first turn too.
    sent = sim.simulator.stats()["recent_requests"][1]["body"]
    assert "What is a toll road?" in orjson.dumps(sent).decode()
    assert len(ledger(sim, user="u-features")) == 3


def test_a_budget_refuses_exactly_as_over_http(sim: SimulatedGateway) -> None:
    client = sim.openai()
    statuses = []
    with sim.attribute(feature="capped"):
        for _ in range(CAPPED + 2):
            try:
                client.chat.completions.create(model="sim", messages=MESSAGES,
                                               max_tokens=OUT)
                statuses.append(200)
            except openai.RateLimitError as e:
                statuses.append(e.status_code)
                assert e.body["code"] == "budget_exceeded"  # type: ignore[index]
    assert statuses == [200] * CAPPED + [429, 429]
    assert sim.simulator.stats()["requests"] == CAPPED
    assert [r["status"] for r in ledger(sim, feature="capped")] == statuses


def test_the_cache_hits(sim: SimulatedGateway) -> None:
    client = sim.openai()
    ask = {"role": "user", "content": "A question asked twice."}
    first = client.chat.completions.with_raw_response.create(
        model="sim-cached", messages=[ask], max_tokens=OUT)
    again = client.chat.completions.with_raw_response.create(
        model="sim-cached", messages=[ask], max_tokens=OUT)
    assert (first.headers["x-tollway-cache"], again.headers["x-tollway-cache"]) == (
        "miss", "hit")
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert sim.simulator.stats()["requests"] == 1
    rows = ledger(sim, model_asked="sim-cached")
    assert [r["cache"] for r in rows] == ["miss", "hit"] and rows[1]["cost_usd"] == 0


def test_faults_on_demand_are_retried_by_the_gateway(sim: SimulatedGateway) -> None:
    sim.simulator.fail_next("500", "503")
    with sim.attribute(user="u-faults"):
        reply = sim.openai().chat.completions.create(model="sim", messages=MESSAGES,
                                                     max_tokens=OUT)
    assert reply.usage is not None and reply.usage.completion_tokens == OUT
    stats = sim.simulator.stats()
    assert (stats["faults_injected"]["500"], stats["faults_injected"]["503"]) == (1, 1)
    assert [r["retries"] for r in ledger(sim, user="u-faults")] == [2]


def test_closing_a_stream_early_cancels_the_upstream_call(sim: SimulatedGateway) -> None:
    sim.simulator.configure(output_tokens=500, token_ms=5)  # 2.5 s if read to the end
    client = sim.openai()
    with sim.attribute(user="u-cancel"), client.chat.completions.create(
            model="sim", messages=MESSAGES, max_tokens=500, stream=True) as stream:
        for i, _ in enumerate(stream):
            if i == 3:
                break
    # close() returned once the request was accounted for: its row is there already.
    [row] = ledger(sim, user="u-cancel")
    assert row["outcome"] == "aborted" and 0 < row["output_tokens"] < 500
    deadline = time.monotonic() + 5  # the simulator's side, in its own thread: poll it
    while sim.simulator.stats()["streams_cancelled"] != 1:
        assert time.monotonic() < deadline, sim.simulator.stats()
        time.sleep(0.01)
    assert sim.simulator.stats()["tokens_generated"] < 500


async def test_a_request_that_times_out_is_a_client_that_left(sim: SimulatedGateway
                                                              ) -> None:
    sim.simulator.configure(ttft_ms=5000)  # far past the SDKs' timeouts below
    with sim.attribute(user="u-timeout"):
        with pytest.raises(openai.APITimeoutError):
            sim.openai(timeout=0.3).chat.completions.create(
                model="sim", messages=MESSAGES, max_tokens=OUT)
        client = sim.async_anthropic(timeout=0.3)
        with pytest.raises(anthropic.APITimeoutError):
            await client.messages.create(model="sim-claude", max_tokens=OUT,
                                         messages=MESSAGES)
        await client.close()
    # Each raised once its request was accounted for, as a client that hung up.
    assert [r["outcome"] for r in ledger(sim, user="u-timeout")] == ["aborted", "aborted"]


def test_eight_threads_at_once_keep_the_budget_exact(sim: SimulatedGateway) -> None:
    client = sim.openai()  # one client shared by every thread, as an app would
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        start.wait()
        with sim.attribute(user=f"thread-{n}", feature="threads"):
            for _ in range(EACH):
                try:
                    client.chat.completions.create(model="sim", messages=MESSAGES,
                                                   max_tokens=OUT)
                except BaseException as e:  # counted, asserted below
                    errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # The budget admitted exactly THREADS x EACH requests' tokens: one more is refused.
    with sim.attribute(feature="threads"), pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="sim", messages=MESSAGES, max_tokens=OUT)
    rows = ledger(sim, feature="threads")
    ok = [r for r in rows if r["status"] == 200]
    assert len(ok) == THREADS * EACH and len(rows) == THREADS * EACH + 1
    assert sum(r["input_tokens"] + r["output_tokens"] for r in ok) == (
        THREADS * EACH * tokens_per_request())
    by_user = {f"thread-{n}": 0 for n in range(THREADS)}
    for r in ok:
        by_user[r["user"]] += 1
    assert set(by_user.values()) == {EACH}  # each thread's own attribution
    assert sim.simulator.stats()["requests"] == THREADS * EACH


def _fds() -> set[str]:
    gc.collect()  # a closed SDK client's objects go now, not at some later collection
    return set(os.listdir("/proc/self/fd"))


async def test_nothing_is_left_after_close() -> None:
    threads, fds = set(threading.enumerate()), _fds()
    tasks = asyncio.all_tasks()
    gw = simulated(output_tokens=OUT, token_ms=2)
    sync, aclient = gw.openai(), gw.async_anthropic()
    sync.chat.completions.create(model="sim", messages=MESSAGES, max_tokens=OUT)
    with sync.chat.completions.create(model="sim", messages=MESSAGES, max_tokens=OUT,
                                      stream=True) as s:
        next(iter(s))  # left early
    async with aclient.messages.stream(model="sim-claude", max_tokens=OUT,
                                       messages=MESSAGES) as stream:
        assert await stream.get_final_text()
    gw.simulator.configure(output_tokens=1000)  # 2 s of stream
    opened = await aclient.messages.create(model="sim-claude", max_tokens=1000,
                                           messages=MESSAGES, stream=True)
    assert set(threading.enumerate()) - threads  # the gateway's and the simulator's
    gw.close()  # with a stream still open: it is ended as a client that hung up
    events = [e.type async for e in opened]  # what had arrived, then the end
    assert "message_stop" not in events
    with pytest.raises(openai.APIConnectionError):  # a closed gateway refuses, clearly
        sync.chat.completions.create(model="sim", messages=MESSAGES, max_tokens=OUT)
    gw.close()  # idempotent
    await aclient.close()
    sync.close()
    assert set(threading.enumerate()) == threads
    assert _fds() == fds
    assert asyncio.all_tasks() == tasks


def test_import_tollway_stays_cheap() -> None:
    """`tollway.Gateway` is imported on first use: the CLI and server workers, which
    import the package, do not pay for the library or the SDKs."""
    import subprocess
    import sys

    code = ("import sys, tollway; assert 'tollway.library' not in sys.modules; "
            "assert 'openai' not in sys.modules; tollway.Gateway; "
            "assert 'tollway.library' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
