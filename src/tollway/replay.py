"""`tollway replay TRACE.jsonl --config A.yaml [--config B.yaml ...]`: what each policy
would have cost on a trace of conversations, decided on replayed traffic instead of
guessed.

For each configuration in turn, a fresh `tollway simulate` (the providers' wire
formats, priced usage) and a fresh `tollway serve` with that configuration (its
OpenAI and Anthropic providers pointed at the simulator through OPENAI_BASE_URL /
ANTHROPIC_BASE_URL, its store in a scratch directory) replay every conversation of the
trace as an app would: each user turn streamed with the whole history so far resent
(the assistant turns are what came back), a turn marked `abort_after` closed after that
many chunks. Conversations run side by side (`--concurrency`), their turns in order.

Per policy it reports the bill — priced from the simulator's own per-model usage
(prompt, cached and completion tokens, at the price table's rates: provider prompt
caching priced the same way for every policy) and, beside it, the gateway's own ledger
— what answered each turn (model, tier), cache hits, and **wrong hits**: a cached
answer served to a turn whose labelled meaning differs from the turn that produced it
(the trace format: wire/trace.py; bench/chatbot_trace.py makes a synthetic one, and
the gateway's `capture` records real traffic in it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from tqdm import tqdm

from tollway.accounting import prices
from tollway.accounting.money import usd_column
from tollway.types import Usage
from tollway.wire import trace as trace_format
from tollway.wire.trace import Conversation, Turn


def load_trace(path: Path) -> list[Conversation]:
    """Whole-conversation lines, per-turn lines (a capture), or both (wire/trace.py)."""
    return trace_format.read(path.read_bytes())


@dataclass(slots=True)
class Answered:
    """One turn as the app saw it."""

    turn: Turn
    status: int
    model: str | None = None
    tier: str | None = None
    cache: str | None = None
    text: str = ""
    aborted: bool = False
    cost_usd: float | None = None  # the gateway's own figure (the stream's cost trailer)


@dataclass
class PolicyRun:
    config: Path
    answered: list[Answered] = field(default_factory=list)
    upstream_usd: float = 0.0  # from the simulator's per-model usage
    ledger_usd: float = 0.0  # from the gateway's own ledger
    upstream_tokens: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def wrong_hits(self) -> int:
        """Cached answers served to a turn of another meaning than the turn whose
        answer it was (answers are told apart by their text)."""
        meaning_of: dict[str, str] = {}
        for a in self.answered:
            if a.cache not in ("hit", "semantic-hit") and a.text and not a.aborted:
                meaning_of.setdefault(a.text, a.turn.meaning)
        return sum(1 for a in self.answered if a.cache in ("hit", "semantic-hit")
                   and meaning_of.get(a.text, a.turn.meaning) != a.turn.meaning)


# -- processes ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _process(argv: list[str], cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    log = (cwd / "out.log").open("wb")
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _died(proc: subprocess.Popen[bytes], log: Path) -> str:
    return (f"tollway replay: {proc.args!r} exited ({proc.returncode}):\n"
            f"{log.read_text(errors='replace')[-2000:]}")


async def _ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes],
                 log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(_died(proc, log))
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.1)  # a process starting: nothing to await but its port
    sys.exit(f"tollway replay: {url} did not answer within 60 s")


# -- one conversation --------------------------------------------------------------------


async def _turn(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                messages: list[dict[str, Any]], turn: Turn, model: str) -> Answered:
    body = {"model": model, "messages": messages, "stream": True,
            "stream_options": {"include_usage": True}}
    async with session.post(url, data=orjson.dumps(body), headers=headers) as r:
        a = Answered(turn, r.status, r.headers.get("x-tollway-model"),
                     r.headers.get("x-tollway-tier"), r.headers.get("x-tollway-cache"))
        if r.status != 200:
            await r.read()
            return a
        pieces: list[str] = []
        chunks = 0
        async for line in r.content:
            if line.startswith(b": tollway cost_usd="):
                a.cost_usd = _trailer_cost(line)
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            event = orjson.loads(line[6:])
            for choice in event.get("choices") or ():
                pieces.append((choice.get("delta") or {}).get("content") or "")
            chunks += 1
            if turn.abort_after is not None and chunks >= turn.abort_after:
                a.aborted = True
                r.close()  # the user closed the tab
                break
        a.text = "".join(pieces)
        return a


def _trailer_cost(line: bytes) -> float | None:
    figure = line.split(b"=", 1)[1].split(b" ", 1)[0].strip()
    try:
        return float(figure)
    except ValueError:  # "unpriced"
        return None


async def _conversation(session: aiohttp.ClientSession, base: str, key: str,
                        conv: Conversation, model: str, bar: tqdm[Any]) -> list[Answered]:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json",
               "x-tollway-conversation-id": conv.id}
    if conv.user:
        headers["x-tollway-user"] = conv.user
    if conv.feature:
        headers["x-tollway-feature"] = conv.feature
    messages: list[dict[str, Any]] = (
        [{"role": "system", "content": conv.system}] if conv.system else [])
    out = []
    for turn in conv.turns:
        messages.append({"role": "user", "content": turn.text})
        a = await _turn(session, f"{base}/v1/chat/completions", headers, messages, turn, model)
        out.append(a)
        bar.update(1)
        if a.status != 200:
            messages.pop()  # refused: the app shows an error, the user goes on
        else:
            messages.append({"role": "assistant", "content": a.text})
    return out


# -- one policy ---------------------------------------------------------------------------


def upstream_bill(stats: dict[str, Any], table: prices.PriceTable
                  ) -> tuple[float, dict[str, dict[str, int]]]:
    """What the simulator's per-model usage costs at the table's rates (cached input at
    the cached rate, Anthropic's cache writes at the write rate)."""
    by_model: dict[str, dict[str, int]] = stats.get("by_model") or {}
    usd = 0.0
    for model, t in by_model.items():
        price = table.get(model)
        if price is None:
            continue
        usd += prices.cost(Usage(prompt_tokens=t.get("prompt_tokens", 0),
                                 completion_tokens=t.get("completion_tokens", 0),
                                 cached_tokens=t.get("cached_tokens", 0),
                                 cache_write_tokens=t.get("cache_write_tokens", 0)), price)
    return usd, by_model


async def _ledger_usd(session: aiohttp.ClientSession, base: str, key: str) -> float:
    async with session.get(f"{base}/admin/spend?by=model",
                           headers={"authorization": f"Bearer {key}"}) as r:
        body = await r.json()
    return float((body.get("total") or {}).get("cost_usd") or 0.0)


async def run_policy(config: Path, trace: list[Conversation], model: str,
                     concurrency: int) -> PolicyRun:
    """`config` is absolute: the gateway runs in a scratch directory."""
    run = PolicyRun(config)
    t0 = time.monotonic()
    key = "replay-" + secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="tollway-replay-") as tmp:
        work = Path(tmp)
        (work / "sim").mkdir()
        (work / "gw").mkdir()
        sim_port, gw_port = _free_port(), _free_port()
        sim_url, base = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OPENAI_", "ANTHROPIC_", "TOLLWAY_"))}
        gw_env = {**env, "OPENAI_API_KEY": "replay", "OPENAI_BASE_URL": f"{sim_url}/v1",
                  "ANTHROPIC_API_KEY": "replay", "ANTHROPIC_BASE_URL": sim_url,
                  "TOLLWAY_MASTER_KEY": key}
        sim_argv = [sys.executable, "-m", "tollway.simulate.server", "--port", str(sim_port),
                    "--ttft-ms", "0", "--token-ms", "0"]
        gw_argv = [sys.executable, "-m", "tollway.cli", "serve", "--port", str(gw_port),
                   "--config", str(config)]
        timeout = aiohttp.ClientTimeout(total=300)
        with _process(sim_argv, work / "sim", env) as sim, \
                _process(gw_argv, work / "gw", gw_env) as gw:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await _ready(session, f"{sim_url}/_sim/stats", sim, work / "sim" / "out.log")
                await _ready(session, f"{base}/health", gw, work / "gw" / "out.log")
                gate = asyncio.Semaphore(concurrency)
                total = sum(len(c.turns) for c in trace)
                with tqdm(total=total, desc=config.name, unit="turn", leave=True,
                          file=sys.stderr) as bar:

                    async def one(conv: Conversation) -> list[Answered]:
                        async with gate:
                            return await _conversation(session, base, key, conv, model, bar)

                    for answered in await asyncio.gather(*(one(c) for c in trace)):
                        run.answered += answered
                run.ledger_usd = await _ledger_usd(session, base, key)
                async with session.get(f"{sim_url}/_sim/stats") as r:
                    stats = await r.json()
    run.upstream_usd, run.upstream_tokens = upstream_bill(stats, prices.load_table())
    run.seconds = time.monotonic() - t0
    return run


# -- the report ----------------------------------------------------------------------------


def report(runs: list[PolicyRun]) -> str:
    base = runs[0]
    head = ["policy", "bill (upstream usage)", "vs first", "ledger", "turns", "refused",
            "cache hits", "wrong hits", "answered by"]
    rows = []
    bills = usd_column([r.upstream_usd for r in runs])
    ledgers = usd_column([r.ledger_usd for r in runs])
    for r, bill, ledger in zip(runs, bills, ledgers, strict=True):
        n = len(r.answered)
        hits = sum(a.cache in ("hit", "semantic-hit") for a in r.answered)
        refused = sum(a.status != 200 for a in r.answered)
        models = Counter(a.model for a in r.answered if a.status == 200 and a.model)
        by = ", ".join(f"{m} {c / max(n - refused, 1):.0%}" for m, c in models.most_common())
        share = r.upstream_usd / base.upstream_usd if base.upstream_usd else float("nan")
        rows.append([r.config.name, f"${bill}", f"{share:.1%}", f"${ledger}", str(n),
                     str(refused), str(hits), str(r.wrong_hits()), by])
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([line, "-" * len(line), *body])


async def replay(trace_path: Path, configs: list[Path], model: str,
                 concurrency: int) -> list[PolicyRun]:
    trace = load_trace(trace_path)
    return [await run_policy(c.resolve(), trace, model, concurrency) for c in configs]


def main(trace: Path, configs: list[Path], model: str, concurrency: int,
         json_out: Path | None) -> int:
    for c in configs:
        if not c.is_file():
            print(f"tollway replay: no configuration file {c}", file=sys.stderr)
            return 2
    runs = asyncio.run(replay(trace, configs, model, concurrency))
    print(report(runs))
    if json_out is not None:
        json_out.write_bytes(orjson.dumps([
            {"config": str(r.config), "upstream_usd": r.upstream_usd,
             "ledger_usd": r.ledger_usd, "seconds": r.seconds,
             "upstream_tokens": r.upstream_tokens, "wrong_hits": r.wrong_hits(),
             "turns": [{"kind": a.turn.kind, "needs": a.turn.needs, "meaning": a.turn.meaning,
                        "status": a.status, "answer": a.text,
                        "model": a.model, "tier": a.tier, "cache": a.cache,
                        "aborted": a.aborted, "cost_usd": a.cost_usd}
                       for a in r.answered]} for r in runs],
            option=orjson.OPT_INDENT_2))
    return 0
