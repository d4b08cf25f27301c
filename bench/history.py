"""Conversation memory (issue 9): what the history policies save on a long chat, and
what deciding them costs the gateway.

1. The same 40-turn conversation (seeded: user turns of 20-120 words, replies of
   60-200 tokens, every fifth answer through a tool call and its result) through
   `tollway serve` in front of `tollway simulate`, kept server-side
   (`x-tollway-conversation`), under each policy: `none` (the whole history every
   turn, what most apps do), `window` (2,000 tokens) and `summarise` (above 2,000
   tokens, the last ~800 kept verbatim, summaries of at most 200 tokens by a
   separate alias). Totals come from the gateway's ledger: the input tokens of every
   upstream call (the summariser's included), the output tokens, and dollars at
   gpt-4o's list price ($2.50 / $10.00 per 1M tokens), which the simulated model is
   priced at.
2. The gateway's own cost per request of applying a policy to a 40-turn history, in
   process (layout, per-message token counts — cached across turns, as in the
   server — and the window choice), p50 over repeats.

    .venv/bin/python bench/history.py           # ~30 s -> docs/benchmarks/history.md
    .venv/bin/python bench/history.py --quick   # -> bench/results/history-quick.md
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

import cli
import harness
import report

PRICE_IN, PRICE_OUT = 2.50, 10.00  # gpt-4o, USD per 1M tokens
WINDOW, SUMMARISE_ABOVE, KEEP_RECENT, SUMMARY_MAX = 2000, 2000, 800, 200
SYSTEM = "You are the support assistant of a bicycle shop. Answer briefly and exactly."
TOOLS = [{"type": "function", "function": {
    "name": "stock", "description": "How many of a part are in stock.",
    "parameters": {"type": "object", "properties": {"sku": {"type": "string"}}}}}]
WORDS = ["wheel", "spoke", "brake", "chain", "gear", "tyre", "frame", "saddle", "pedal",
         "bell", "lamp", "lock", "cassette", "derailleur", "hub", "rim", "valve", "tube",
         "crank", "bottom", "bracket", "headset", "stem", "bar", "tape"]
POLICIES = {"none": None, "window": {"policy": "window", "window_tokens": WINDOW},
            "summarise": {"policy": "summarise", "summarise_above": SUMMARISE_ABOVE,
                          "keep_recent_tokens": KEEP_RECENT, "summary_model": "summary",
                          "summary_max_tokens": SUMMARY_MAX}}


def gateway_config(sim_url: str) -> dict[str, Any]:
    models: dict[str, Any] = {
        f"chat-{name}": {"deployments": [harness.sim_deployment(sim_url)],
                         **({"history": h} if h else {})}
        for name, h in POLICIES.items()}
    models["summary"] = {"deployments": [harness.sim_deployment(sim_url, "summary-model")]}
    price = {"input": PRICE_IN, "output": PRICE_OUT}
    return {"models": models, "prices": {"sim-model": price, "summary-model": price},
            "server": {"max_tokens_cap": 4096}}


async def converse(http: aiohttp.ClientSession, url: str, key: str, model: str,
                   conversation: str, turns: int, seed: int) -> None:
    rng = random.Random(seed)
    headers = {"authorization": f"Bearer {key}", "x-tollway-conversation": conversation}

    async def send(messages: list[dict[str, Any]], max_tokens: int,
                   **extra: Any) -> dict[str, Any]:
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, **extra}
        async with http.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
            got: dict[str, Any] = await r.json()
            if r.status != 200:
                raise RuntimeError(f"{r.status}: {got}")
            return got

    for t in range(turns):
        question = {"role": "user", "content": f"Turn {t}: " + " ".join(
            rng.choice(WORDS) for _ in range(rng.randint(20, 120)))}
        new = [{"role": "system", "content": SYSTEM}, question] if t == 0 else [question]
        size = rng.randint(60, 200)
        if t % 5 == 4:
            reply = await send(new, size, tools=TOOLS, tool_choice={
                "type": "function", "function": {"name": "stock"}})
            call = reply["choices"][0]["message"]["tool_calls"][0]
            await send([{"role": "tool", "tool_call_id": call["id"],
                         "content": f"{rng.randint(0, 9)} in stock"}], size)
        else:
            await send(new, size)


def run_conversations(work: Path, turns: int) -> dict[str, dict[str, float]]:
    with harness.Servers(work) as servers:
        sim, gw = harness.simulator_and_gateway(servers, gateway_config, master=True)
        harness.sim_config(sim, ttft_ms=0, token_ms=0, output_tokens=1000)

        async def all_policies() -> None:
            async with aiohttp.ClientSession() as http:
                for name in POLICIES:
                    cli.log(f"{turns} turns, policy {name}")
                    await converse(http, gw.url, harness.MASTER, f"chat-{name}",
                                   f"bench-{name}", turns, seed=9)

        asyncio.run(all_policies())
        rows = harness.http("GET", gw.url + "/admin/ledger", key=harness.MASTER)
    out: dict[str, dict[str, float]] = {}
    for row in orjson.loads(rows)["data"]:
        name = str(row["conversation"]).removeprefix("bench-")
        t = out.setdefault(name, {"requests": 0, "summaries": 0, "input": 0, "output": 0,
                                  "usd": 0.0, "last_prompt": 0})
        is_summary = str(row["request_id"]).endswith(":summary")
        t["summaries" if is_summary else "requests"] += 1
        t["input"] += row["input_tokens"]
        t["output"] += row["output_tokens"]
        t["usd"] += row["cost_usd"]
        if not is_summary:
            t["last_prompt"] = row["input_tokens"]
    return out


def policy_cost(repeats: int) -> dict[str, float]:
    """µs per request to lay out a 40-turn history and choose its window."""
    from tollway.accounting.tokens import REPLY_PRIMING, message_costs
    from tollway.conversation import history
    from tollway.types import Message

    rng = random.Random(3)
    messages = [Message(role="system", content=SYSTEM)]
    for t in range(40):
        messages.append(Message(role="user", content=f"Turn {t}: " + " ".join(
            rng.choice(WORDS) for _ in range(rng.randint(20, 120)))))
        messages.append(Message(role="assistant", content=" ".join(
            rng.choice(WORDS) for _ in range(rng.randint(40, 150)))))
    messages.append(Message(role="user", content="And the last question?"))

    def once() -> None:
        lay = history.layout(messages)
        costs = message_costs(lay.rest, "gpt-4o")
        pinned = sum(message_costs(lay.pinned, "gpt-4o"))
        history.window(lay, costs, pinned, WINDOW, REPLY_PRIMING)

    once()  # the token counts of the turns, as a server has them after earlier turns
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        samples.append((time.perf_counter() - t0) * 1e6)
    return {"p50": statistics.median(samples), "messages": len(messages)}


def render(turns: int, got: dict[str, dict[str, float]], cost: dict[str, float]) -> str:
    base = got["none"]
    rows = []
    for name in POLICIES:
        t = got[name]
        rows.append((name, f"{int(t['requests'])}", f"{int(t['summaries'])}",
                     f"{int(t['input']):,}", f"{int(t['input']) / base['input']:.2f}",
                     f"{int(t['last_prompt']):,}", f"{int(t['output']):,}",
                     f"${t['usd']:.4f}", f"{t['usd'] / base['usd']:.2f}"))
    table = report.table(["policy", "requests", "summariser calls", "input tokens",
                          "vs none", "last prompt", "output tokens", "cost", "vs none"], rows)
    s = got["summarise"]
    return "\n\n".join([
        f"One {turns}-turn conversation (seeded; user turns of 20-120 words, replies of "
        "60-200 tokens, every fifth answered through a tool call and its result, so "
        f"{int(base['requests'])} requests), kept server-side, through `tollway serve` "
        "in front of `tollway simulate`, once per policy: `none` resends the whole "
        f"history, `window` keeps {WINDOW:,} tokens, `summarise` summarises above "
        f"{SUMMARISE_ABOVE:,} tokens keeping about the last {KEEP_RECENT} verbatim "
        f"(summaries up to {SUMMARY_MAX} tokens, by a separate alias). Tokens and dollars "
        "are the ledger's, summariser calls included, at gpt-4o's list price ($2.50 / "
        "$10.00 per 1M).",
        table,
        f"`summarise` called the summariser {int(s['summaries'])} times in "
        f"{int(s['requests'])} requests (every few turns, each time extending the previous "
        "summary with the turns since), not once per turn. The simulator's replies are "
        "random words, so what the summaries say is not measured here, only their cost.",
        f"Deciding the window for a {int(cost['messages'])}-message history costs the "
        f"gateway **{cost['p50']:.0f} µs** p50 per request (in process; the turns' token "
        "counts cached from earlier turns, as in a server)."])


def headline(turns: int, got: dict[str, dict[str, float]], cost: dict[str, float]) -> str:
    base, w, s = got["none"], got["window"], got["summarise"]
    return (f"over a {turns}-turn chat, `window` sends {w['input'] / base['input']:.2f}x and "
            f"`summarise` {s['input'] / base['input']:.2f}x the input tokens of resending "
            f"the whole history ({w['usd'] / base['usd']:.2f}x and "
            f"{s['usd'] / base['usd']:.2f}x the cost); deciding the window costs the "
            f"gateway {cost['p50']:.0f} µs a request.")


def main(argv: list[str] | None = None) -> int:
    args = cli.parser(__doc__).parse_args(argv)
    turns = 40
    with tempfile.TemporaryDirectory(prefix="tollway-bench-history-") as work:
        got = run_conversations(Path(work), turns)
    cost = policy_cost(200 if args.quick else 2000)
    report.write(args, title="Conversation memory", headline=headline(turns, got, cost),
                 body=render(turns, got, cost))
    return 0


if __name__ == "__main__":
    sys.exit(main())
