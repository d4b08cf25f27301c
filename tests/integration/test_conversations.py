"""Conversation memory against a real gateway in front of `tollway simulate`, through
the official SDKs: server-side conversations, the window and summarise policies, the
isolation of one key's conversations from another's, and per-conversation caps."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import msgspec
import openai
import orjson
import pytest

from tests.conftest import gateway_config
from tests.helpers.admin import admin, call, create_key, ledger_rows
from tests.helpers.clients import track
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle
from tollway import cli, config
from tollway.accounting.settlement import Answered
from tollway.accounting.tokens import count_messages
from tollway.conversation.summary import HEADER as SUMMARY_HEADER
from tollway.gateway import Gateway
from tollway.gateway.call import Asks, Call
from tollway.types import Message
from tollway.wire.openai import parse_chat_request

MASTER = "master-" + os.urandom(12).hex()
WINDOW = 2000
SUMMARISE_ABOVE, KEEP_RECENT = 1500, 600
CAP_TOKENS = 1200
SYSTEM = "You are the support assistant of a bicycle shop. Answer briefly."
TOOLS = [{"type": "function", "function": {
    "name": "stock", "description": "How many of a part are in stock.",
    "parameters": {"type": "object", "properties": {"sku": {"type": "string"}},
                   "required": ["sku"]}}}]
STOCK_CALL = {"type": "function", "function": {"name": "stock"}}


def memory_config(sim_url: str) -> dict[str, Any]:
    cfg = gateway_config(sim_url)
    models = cfg["models"]
    assert isinstance(models, dict)
    dep = models["sim"]["deployments"][0]

    def alias(history: dict[str, Any] | None = None, model: str = "sim-model") -> dict[str, Any]:
        out: dict[str, Any] = {"deployments": [{**dep, "model": model}]}
        if history is not None:
            out["history"] = history
        return out

    models["sim-window"] = alias({"policy": "window", "window_tokens": WINDOW})
    models["sim-sum"] = alias({"policy": "summarise", "summarise_above": SUMMARISE_ABOVE,
                               "keep_recent_tokens": KEEP_RECENT,
                               "summary_model": "sim-summary", "summary_max_tokens": 120})
    models["sim-summary"] = alias(model="summary-model")
    cfg["server"] = {**cfg["server"], "max_tokens_cap": 400}  # type: ignore[dict-item]
    return cfg


@pytest.fixture(scope="module")
def mgw(sim: SimHandle) -> Iterator[GatewayHandle]:
    handle = start_gateway(memory_config(sim.url), env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def capped(sim: SimHandle) -> Iterator[GatewayHandle]:
    """Every conversation capped at CAP_TOKENS."""
    cfg = memory_config(sim.url)
    cfg["budgets"] = {"conversations": [{"tokens": CAP_TOKENS, "period": "total"}]}
    handle = start_gateway(cfg, env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        yield handle
    finally:
        handle.stop()


def client(gw: GatewayHandle, key: str) -> openai.AsyncOpenAI:
    return track(openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0))


def new_id() -> str:
    return "conv-" + os.urandom(6).hex()


def rng_text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(["wheel", "spoke", "brake", "chain", "gear", "tyre", "frame",
                                "saddle", "pedal", "bell", "lamp", "lock"]) for _ in range(n))


def last_upstream(sim: SimHandle) -> dict[str, Any]:
    body: dict[str, Any] = sim.stats()["recent_requests"][-1]["body"]
    return body


def tool_pairs_whole(messages: list[dict[str, Any]]) -> bool:
    """Every tool result right after its call; every call followed by all its results."""
    open_calls: set[str] = set()
    for m in messages:
        if m["role"] == "tool":
            if m["tool_call_id"] not in open_calls:
                return False
            open_calls.discard(m["tool_call_id"])
        else:
            if open_calls:
                return False
            open_calls = {c["id"] for c in m.get("tool_calls") or ()}
    return not open_calls


def tokens_of(messages: list[dict[str, Any]]) -> int:
    return count_messages(msgspec.convert(messages, list[Message]), "sim-model")


async def converse(c: openai.AsyncOpenAI, sim: SimHandle, model: str, turns: int,
                   seed: int, *, conversation: str | None = None,
                   headers: dict[str, str] | None = None,
                   check: Any = None) -> list[Any]:
    """`turns` user turns, every fifth answered through a tool call. With a
    conversation id only the new turns are sent; without, the whole history. `check`
    sees each upstream request's body, the new turn and the raw response."""
    rng = random.Random(seed)
    extra = {**(headers or {}), **({"x-tollway-conversation": conversation}
                                   if conversation else {})}
    full: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    raws = []
    for t in range(turns):
        question = {"role": "user", "content": f"Turn {t}: " + rng_text(rng, rng.randint(20, 90))}
        full.append(question)
        new: list[dict[str, Any]] = [question]
        if conversation and t == 0:
            new = [full[0], question]
        use_tool = t % 5 == 4
        raw = await c.chat.completions.with_raw_response.create(
            model=model, messages=new if conversation else full,  # type: ignore[arg-type]
            max_tokens=rng.randint(30, 90), extra_headers=extra,
            **({"tools": TOOLS, "tool_choice": STOCK_CALL} if use_tool else {}))
        reply = raw.parse().choices[0].message
        if check is not None:
            check(last_upstream(sim), [question], raw)
        raws.append(raw)
        full.append(reply.model_dump(exclude_none=True, exclude={"annotations", "audio"}))
        if use_tool:
            assert reply.tool_calls
            result = {"role": "tool", "tool_call_id": reply.tool_calls[0].id,
                      "content": f"{rng.randint(0, 9)} in stock"}
            full.append(result)
            raw = await c.chat.completions.with_raw_response.create(
                model=model, messages=[result] if conversation else full,  # type: ignore[arg-type]
                max_tokens=40, extra_headers=extra)
            if check is not None:
                check(last_upstream(sim), [question, full[-2], result], raw)
            raws.append(raw)
            full.append(raw.parse().choices[0].message.model_dump(
                exclude_none=True, exclude={"annotations", "audio"}))
    return raws


@pytest.mark.parametrize("where", ["server", "client"])
async def test_a_40_turn_conversation_stays_within_its_window(
        mgw: GatewayHandle, fresh_sim: SimHandle, where: str) -> None:
    """Every upstream prompt is within the 2,000-token window plus the current turn;
    the system prompt and the latest turn are always there; tool calls keep their
    results — with the history kept by the gateway or sent whole by the client."""
    c = client(mgw, MASTER)
    conversation = new_id() if where == "server" else None
    prompts: list[int] = []

    def check(body: dict[str, Any], turn: list[dict[str, Any]], raw: Any) -> None:
        sent = body["messages"]
        assert sent[0] == {"role": "system", "content": SYSTEM}
        assert sent[-len(turn)]["content"] == turn[0]["content"]  # the latest user turn
        if len(turn) > 1:  # ... with the tool call and result answering it
            assert sent[-1]["tool_call_id"] == turn[-1]["tool_call_id"]
        assert tool_pairs_whole(sent) and sent[1]["role"] == "user"
        prompt = tokens_of(sent)
        assert prompt <= WINDOW + tokens_of(turn), (prompt, len(sent))
        assert raw.headers["x-tollway-history"] == "window"
        assert int(raw.headers["x-tollway-history-tokens"]) == prompt - tokens_of(turn)
        prompts.append(prompt)

    raws = await converse(c, fresh_sim, "sim-window", 40, seed=11, conversation=conversation,
                          check=check)
    assert len(prompts) == 48  # 40 turns, 8 of them with a tool call and its result
    assert max(prompts) > WINDOW * 0.8  # the window was reached and used
    saved = [int(r.headers["x-tollway-history-saved-tokens"]) for r in raws]
    assert saved[0] == 0 and saved[-1] > 1000  # later turns left much of the history behind
    if conversation is not None:  # every turn and reply is stored
        _, got = call(mgw.url, MASTER, "GET", f"/v1/conversations/{conversation}")
        assert got["system"] == [{"role": "system", "content": SYSTEM}]
        assert len(got["messages"]) == 40 * 2 + 8 * 2
        assert got["messages"][0]["content"].startswith("Turn 0: ")


async def test_summarise_calls_the_summariser_every_few_turns(
        mgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    """40 turns with `summarise`: the summariser runs O(turns / k) times, each request
    carries the summary and the latest turn, and far fewer input tokens go upstream
    than with the whole history resent."""
    c = client(mgw, MASTER)
    summarised: list[bool] = []

    def check(body: dict[str, Any], turn: list[dict[str, Any]], raw: Any) -> None:
        sent = body["messages"]
        assert sent[0] == {"role": "system", "content": SYSTEM}
        assert any(m.get("content") == turn[0]["content"] for m in sent)
        assert tool_pairs_whole([m for m in sent if not str(m.get("content", "")).startswith(
            SUMMARY_HEADER)])
        summarised.append(any(str(m.get("content") or "").startswith(SUMMARY_HEADER)
                              for m in sent))
        if summarised[-1]:
            assert sent[1]["content"].startswith(SUMMARY_HEADER)
            assert tokens_of(sent) <= SUMMARISE_ABOVE + tokens_of(turn)
        assert raw.headers["x-tollway-history"] == "summarise"

    conversation = new_id()
    await converse(c, fresh_sim, "sim-sum", 40, seed=12, conversation=conversation,
                   check=check)
    calls = fresh_sim.stats()["requests_by_model"].get("summary-model", 0)
    assert 2 <= calls <= 40 // 4, calls  # every few turns, never every turn
    # Once the history outgrew the threshold, every request carries a summary.
    first = summarised.index(True)
    assert 5 < first < 30 and all(summarised[first:])
    rows = [r for r in ledger_rows(mgw.url, MASTER) if r["conversation"] == conversation]
    summaries = [r for r in rows if r["request_id"].endswith(":summary")]
    assert len(summaries) == calls and all(r["model"] == "summary-model" for r in summaries)
    turns = [r for r in rows if not r["request_id"].endswith(":summary")]
    assert len(turns) == 48 and all(r["history_tokens"] is not None for r in turns)
    assert sum(r["history_saved_tokens"] for r in turns) > 0


async def test_one_key_cannot_read_extend_or_delete_anothers_conversation(
        mgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    key_a, rec_a = create_key(mgw.url, MASTER, name="a")
    key_b, _ = create_key(mgw.url, MASTER, name="b")
    a, b = client(mgw, key_a), client(mgw, key_b)
    cid = new_id()
    secret = "The customer's locker code is 7731."
    await a.chat.completions.create(
        model="sim", messages=[{"role": "user", "content": secret}],
        extra_headers={"x-tollway-conversation": cid})
    # B names the same id: a conversation of its own, with none of A's turns.
    await b.chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "What is the locker code?"}],
        extra_headers={"x-tollway-conversation": cid})
    sent = last_upstream(fresh_sim)["messages"]
    assert sent == [{"role": "user", "content": "What is the locker code?"}]
    # The same key with another end user is someone else too.
    await a.chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "And the code?"}],
        extra_headers={"x-tollway-conversation": cid, "x-tollway-user": "mallory"})
    assert secret not in orjson.dumps(last_upstream(fresh_sim)).decode()

    def api(key: str, method: str, path: str) -> tuple[int, Any]:
        return call(mgw.url, key, method, f"/v1/conversations{path}")

    _, mine = api(key_a, "GET", f"/{cid}")
    assert mine["messages"][0]["content"] == secret and len(mine["messages"]) == 2
    _, theirs = api(key_b, "GET", f"/{cid}")
    assert secret not in orjson.dumps(theirs).decode()
    assert [c["id"] for c in api(key_b, "GET", "")[1]["data"]] == [cid]
    # B deletes its own; A's is untouched.
    assert api(key_b, "DELETE", f"/{cid}")[1]["deleted"] is True
    status, gone = api(key_b, "DELETE", f"/{cid}")
    assert status == 404 and gone["error"]["code"] == "not_found"
    assert api(key_b, "GET", f"/{cid}")[0] == 404
    assert api(key_a, "GET", f"/{cid}")[1]["messages"][0]["content"] == secret
    # The master key sees every owner's through the admin API.
    listed = admin(mgw.url, MASTER, "GET", "/admin/conversations?limit=1000")["data"]
    owners = {c["owner"] for c in listed if c["id"] == cid}
    assert owners == {rec_a["lineage"], f"{rec_a['lineage']}/mallory"}
    # Deletion really deletes: A's next turn with that id starts afresh.
    assert api(key_a, "DELETE", f"/{cid}")[0] == 200
    await a.chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "Hello again."}],
        extra_headers={"x-tollway-conversation": cid})
    assert last_upstream(fresh_sim)["messages"] == [{"role": "user", "content": "Hello again."}]


async def test_a_conversation_over_its_cap_is_refused_and_nothing_is_sent(
        capped: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(capped, MASTER)
    cid = new_id()
    fresh_sim.config(output_tokens=60)
    refused: openai.RateLimitError | None = None
    for t in range(40):
        before = fresh_sim.stats()["requests"]
        try:
            await c.chat.completions.create(
                model="sim-sum", max_tokens=60,
                messages=[{"role": "user", "content": f"Turn {t}: " + "tell me more " * 40}],
                extra_headers={"x-tollway-conversation": cid})
        except openai.RateLimitError as e:
            refused = e
            assert fresh_sim.stats()["requests"] == before  # nothing went upstream
            break
    assert refused is not None and t >= 2
    err = refused.body
    assert isinstance(err, dict) and err["code"] == "conversation_cap_exceeded"
    assert f"Conversation '{cid}' has reached its cap" in refused.message
    assert f"{CAP_TOKENS} tokens" in refused.message
    assert "Start a new conversation" in refused.message
    assert refused.response.headers["x-should-retry"] == "false"
    # Again: still refused, still nothing sent; a new conversation works.
    before = fresh_sim.stats()["requests"]
    with pytest.raises(openai.RateLimitError):
        await c.chat.completions.create(
            model="sim", messages=[{"role": "user", "content": "one more?"}],
            extra_headers={"x-tollway-conversation": cid})
    assert fresh_sim.stats()["requests"] == before
    await c.chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "fresh start"}],
        extra_headers={"x-tollway-conversation": new_id()})


async def test_a_streamed_turn_is_stored_before_the_stream_ends(
        mgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = client(mgw, MASTER)
    cid = new_id()
    stream = await c.chat.completions.create(
        model="sim", stream=True, messages=[{"role": "user", "content": "Name a part."}],
        extra_headers={"x-tollway-conversation": cid})
    text = "".join([ch.choices[0].delta.content or "" async for ch in stream
                    if ch.choices])
    # The SDK saw the end of the stream: the reply is already stored.
    await c.chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "Another?"}],
        extra_headers={"x-tollway-conversation": cid})
    assert last_upstream(fresh_sim)["messages"] == [
        {"role": "user", "content": "Name a part."},
        {"role": "assistant", "content": text},
        {"role": "user", "content": "Another?"}]


async def test_the_anthropic_sdk_and_the_body_field_name_conversations_too(
        mgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    cid = new_id()
    ant = track(anthropic.AsyncAnthropic(base_url=mgw.url, api_key=MASTER, max_retries=0))
    await ant.messages.create(model="sim", max_tokens=20, system=SYSTEM,
                              messages=[{"role": "user", "content": "First."}],
                              extra_headers={"x-tollway-conversation": cid})
    # OpenAI SDK, the id in the body: the system prompt and the first exchange come back.
    await client(mgw, MASTER).chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "Second."}],
        extra_body={"conversation": cid})
    body = last_upstream(fresh_sim)
    assert "conversation" not in body  # never forwarded
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == SYSTEM


@pytest.mark.parametrize(("headers", "param"), [
    ({"x-tollway-conversation": "no spaces allowed"}, "x-tollway-conversation"),
    ({"x-tollway-conversation": "x" * 200}, "x-tollway-conversation"),
    ({"x-tollway-history": "everything"}, "x-tollway-history"),
    ({"x-tollway-history-tokens": "-5"}, "x-tollway-history-tokens"),
])
async def test_bad_conversation_input_is_a_400_naming_it(
        mgw: GatewayHandle, fresh_sim: SimHandle, headers: dict[str, str], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        await client(mgw, MASTER).chat.completions.create(
            model="sim", messages=[{"role": "user", "content": "hi"}], extra_headers=headers)
    assert param in e.value.message
    assert fresh_sim.stats()["requests"] == 0


async def test_idle_conversations_go_after_the_retention_period(
        sim: SimHandle, tmp_path: Path) -> None:
    """The gateway used as a library, with an injected clock: a conversation idle for
    longer than `conversations.retention_days` is deleted; one in use stays."""
    now = [1_800_000_000.0]
    cfg = config.parse({
        "models": {"sim": {"deployments": [{"provider": "openai", "model": "sim-model",
                                            "api_base": sim.openai_base, "api_key": "k"}]}},
        "store": {"path": str(tmp_path / "store")},
        "conversations": {"retention_days": 30},
    }, env={})
    gw = Gateway(cfg, clock=lambda: now[0])
    await gw.start()

    async def turn(cid: str, text: str) -> None:
        req = parse_chat_request(orjson.dumps({"model": "sim", "max_tokens": 5, "messages": [
            {"role": "user", "content": text}]}))
        c = Call("r-" + os.urandom(4).hex(), asks=Asks(stored_conversation=cid))
        answer = await gw.chat(c, req)
        await gw.finish(c, Answered(answer))

    try:
        await turn("idle", "Remember my locker code 7731.")
        await turn("busy", "Hello.")
        now[0] += 20 * 86400
        await turn("busy", "Still here.")
        now[0] += 15 * 86400  # idle: 35 days; busy: 15
        assert await gw.prune_conversations() == 1
        assert await gw.store.conversations.load("open", "idle") is None
        busy = await gw.store.conversations.load("open", "busy")
        assert busy is not None and len(busy.turns) == 4
    finally:
        await gw.close()


async def test_the_cli_lists_shows_and_deletes_conversations(
        mgw: GatewayHandle, fresh_sim: SimHandle, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    cid = new_id()
    await client(mgw, MASTER).chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "Keep this."}],
        extra_headers={"x-tollway-conversation": cid})
    monkeypatch.setenv("TOLLWAY_URL", mgw.url)
    monkeypatch.setenv("TOLLWAY_MASTER_KEY", MASTER)

    def tollway(*argv: str) -> str:
        assert cli.main(list(argv)) == 0
        return capsys.readouterr().out

    listed = tollway("conversations", "list", "--owner", "master")
    row = next(line for line in listed.splitlines() if cid in line)
    assert row.split()[:3] == ["master", cid, "2"]
    shown = orjson.loads(tollway("conversations", "show", cid, "--owner", "master"))
    assert shown["messages"][0] == {"role": "user", "content": "Keep this."}
    assert "deleted" in tollway("conversations", "delete", cid, "--owner", "master")
    assert cli.main(["conversations", "show", cid, "--owner", "master"]) == 1
    assert f"No conversation '{cid}' owned by 'master'" in capsys.readouterr().err
