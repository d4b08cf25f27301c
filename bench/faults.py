"""Faults on the primary, a healthy fallback (issue 17): does every request still get
its answer, and how long does it take? One `tollway simulate` is the primary and
answers 30 % of its calls with a fault — 429s, 5xx, hangs, resets, streams dropped
before their first token, then all of them at once —, another is the fallback and
never fails; 2,000 JSON and 2,000 streamed requests through the official openai SDK
(max_retries=0), shared across the phases, at a fixed concurrency. A request succeeds
when it has its whole answer (a stream: every chunk to its finish_reason).

    .venv/bin/python bench/faults.py           # ~1 min -> docs/benchmarks/faults.md
    .venv/bin/python bench/faults.py --quick   # ~20 s -> bench/results/faults-quick.md

The bound checked for latency is the primary's `first_token` timeout plus the
fallback's own p99, measured alone beforehand at the same concurrency: a hung call
costs one first-token timeout, then the fallback answers. Streams dropped after their
first token cannot be retried (the client already has part of the answer); they are
measured apart, to show what they do instead.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import openai
import yaml

import cli
import harness
import report
from harness import MASTER, Server, Servers
from procfs import wait_idle
from report import para

FIRST_TOKEN = 1.0  # the primary's timeouts.first_token (and idle), seconds
RATE = 0.3  # the share of the primary's calls that fail in each phase
CONCURRENCY = 32
MESSAGES: Any = [{"role": "user", "content": "Say hello in five words."}]
# Both upstreams: 50 ms to the first token, then 2 ms a token, 16 tokens.
LATENCY = {"ttft_ms": 50, "token_ms": 2, "output_tokens": 16}
PHASES: list[tuple[str, dict[str, Any]]] = [
    ("429 storm", {"rate_429": RATE}),
    ("5xx burst", {"rate_500": RATE / 2, "rate_503": RATE / 2}),
    ("hangs", {"rate_hang": RATE}),
    ("connection resets", {"rate_reset": RATE}),
    ("streams dropped before the first token", {"rate_drop_stream": RATE,
                                                "drop_after_tokens": 0}),
    ("all five at once", {"rate_429": RATE / 5, "rate_500": RATE / 5,
                          "rate_hang": RATE / 5, "rate_reset": RATE / 5,
                          "rate_drop_stream": RATE / 5, "drop_after_tokens": 0}),
]
QUIET = {"rate_429": 0, "rate_500": 0, "rate_503": 0, "rate_hang": 0, "rate_reset": 0,
         "rate_drop_stream": 0, "drop_after_tokens": None}
LATE_DROP_TOKENS = 4


@dataclass(slots=True)
class Result:
    stream: bool
    ok: bool
    seconds: float
    model: str | None = None
    error: str | None = None


async def one(c: openai.AsyncOpenAI, stream: bool) -> Result:
    t0 = time.perf_counter()
    try:
        raw = await c.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, max_tokens=32, stream=stream)
        model = raw.headers.get("x-tollway-model")
        if stream:
            finished = False
            async for chunk in raw.parse():  # type: ignore[union-attr]
                finished = finished or any(ch.finish_reason for ch in chunk.choices)
            ok = finished
        else:
            ok = bool(raw.parse().choices[0].message.content)  # type: ignore[union-attr]
        return Result(stream, ok, time.perf_counter() - t0, model)
    except openai.APIError as e:
        return Result(stream, False, time.perf_counter() - t0, error=type(e).__name__
                      + ": " + e.message[:120])


async def drive(c: openai.AsyncOpenAI, modes: list[bool]) -> list[Result]:
    """`modes` (True: a stream) sent by CONCURRENCY workers, each as soon as it is free."""
    todo = iter(modes)
    out: list[Result] = []

    async def worker() -> None:
        for stream in todo:
            out.append(await one(c, stream))

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 10) - 1]


@dataclass
class Phase:
    name: str
    faults: dict[str, Any]
    results: list[Result] = field(default_factory=list)
    primary: dict[str, Any] = field(default_factory=dict)  # the simulators' stats
    backup: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def of(self, stream: bool) -> list[Result]:
        return [r for r in self.results if r.stream == stream]


async def phase(c: openai.AsyncOpenAI, prim: Server, back: Server, name: str,
                faults: dict[str, Any], n_json: int, n_stream: int, seed: int) -> Phase:
    for sim in (prim, back):
        harness.COMMANDS.append(f"curl -X POST {sim.url}/_sim/reset")
        await asyncio.to_thread(harness.http, "POST", sim.url + "/_sim/reset")
    await asyncio.to_thread(harness.sim_config, prim, **{**QUIET, **faults, "seed": seed})
    # JSON and streams interleaved, so both meet the same state of the primary.
    modes = [i % 2 == 1 for i in range(2 * min(n_json, n_stream))]
    modes += [False] * (n_json - n_stream) + [True] * (n_stream - n_json)
    t0 = time.monotonic()
    p = Phase(name, faults, await drive(c, modes))
    p.seconds = time.monotonic() - t0
    p.primary = await asyncio.to_thread(stats, prim)
    p.backup = await asyncio.to_thread(stats, back)
    await asyncio.to_thread(harness.sim_config, prim, **QUIET)
    return p


def stats(sim: Server) -> dict[str, Any]:
    got: dict[str, Any] = json.loads(harness.http("GET", sim.url + "/_sim/stats"))
    return got


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


async def run(servers: Servers, args: Any) -> dict[str, Any]:
    prim = harness.start_simulator(servers, "sim-primary")
    back = harness.start_simulator(servers, "sim-fallback")
    for sim in (prim, back):
        harness.sim_config(sim, **LATENCY)
    timeouts = {"connect": 2.0, "first_token": FIRST_TOKEN, "idle": FIRST_TOKEN,
                "total": 30.0}
    config: dict[str, Any] = {
        "models": {
            "chat": {"deployments": [harness.sim_deployment(prim.url, "primary-model",
                                                            timeouts=timeouts)],
                     "fallbacks": ["backup"]},
            "backup": {"deployments": [harness.sim_deployment(back.url, "backup-model")]},
        },
    }
    gw = harness.start_gateway(servers, "gateway", config, master=True)
    await asyncio.to_thread(wait_idle, [gw.pid])
    http = openai.DefaultAsyncHttpx2Client(limits=httpx2.Limits(
        max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY))
    c = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0,
                           timeout=60.0, http_client=http)
    per_mode = args.requests
    cli.log(f"warm-up and the fallback's own latency ({per_mode // 5} requests a mode)")
    await drive(c, [False, True] * 20)
    base = await drive(c, [i % 2 == 1 for i in range(2 * (per_mode // 5))])
    phases = []
    for seed, ((name, faults), n) in enumerate(zip(PHASES, split(per_mode, len(PHASES)),
                                                   strict=True)):
        p = await phase(c, prim, back, name, faults, n, n, seed)
        phases.append(p)
        bad = sum(not r.ok for r in p.results)
        cli.log(f"{name}: {len(p.results)} requests in {p.seconds:.1f} s, {bad} failed, "
                f"p99 JSON {pct([r.seconds for r in p.of(False)], 99) * 1000:.0f} ms, "
                f"stream {pct([r.seconds for r in p.of(True)], 99) * 1000:.0f} ms")
    late = await phase(c, prim, back, "streams dropped after their first tokens",
                       {"rate_drop_stream": RATE, "drop_after_tokens": LATE_DROP_TOKENS},
                       0, per_mode // 20, len(PHASES))
    cli.log(f"late drops: {sum(not r.ok for r in late.results)} of {len(late.results)} failed")
    await c.close()
    return {"base": base, "phases": phases, "late": late, "config": config}


def ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 1000:,.0f}"


def render(work: Path, res: dict[str, Any], problems: dict[str, tuple[int, int]]
           ) -> tuple[str, str]:
    base: list[Result] = res["base"]
    phases: list[Phase] = res["phases"]
    late: Phase = res["late"]
    own = {s: pct([r.seconds for r in base if r.stream == s and r.ok], 99) for s in (False, True)}
    bound = {s: FIRST_TOKEN + own[s] for s in (False, True)}
    rows, verdicts = [], []
    totals = {False: [0, 0], True: [0, 0]}
    for p in phases:
        for s in (False, True):
            rs = p.of(s)
            ok = sum(r.ok for r in rs)
            totals[s][0] += ok
            totals[s][1] += len(rs)
            lat = [r.seconds for r in rs]
            p99 = pct(lat, 99)
            verdicts.append(p99 <= bound[s])
            calls = (p.primary["requests"] + p.backup["requests"]) / max(1, len(p.results))
            rows.append([p.name if not s else "", "stream" if s else "JSON", f"{len(rs):,}",
                         f"{ok:,}", f"{100 * ok / max(1, len(rs)):.2f} %", ms(pct(lat, 50)),
                         ms(p99), ms(max(lat, default=math.nan)),
                         "yes" if p99 <= bound[s] else "**no**",
                         f"{calls:.2f}" if not s else ""])
    faults = {p.name: f"{sum(p.primary['faults_injected'].values()):,} of "
              f"{p.primary['requests']:,}" for p in phases}
    share = {s: 100 * totals[s][0] / max(1, totals[s][1]) for s in (False, True)}
    errors = Counter(r.error for p in phases for r in p.results if not r.ok)
    late_errors = Counter(r.error for r in late.results if not r.ok)
    late_bad = sum(not r.ok for r in late.results)
    headline = (f"30 % of the primary's calls failing (429, 5xx, hangs, resets, streams "
                f"dropped before the first token): {totals[False][0]:,} of "
                f"{totals[False][1]:,} JSON requests ({share[False]:.2f} %) and "
                f"{totals[True][0]:,} of {totals[True][1]:,} streams ({share[True]:.2f} %) "
                f"answered whole by the fallback or the primary; p99 within the primary's "
                f"first-token timeout + the fallback's own p99 in "
                f"{sum(verdicts)} of {len(verdicts)} phase x mode cells.")
    body = [
        "## Setup",
        para(f"""Alias `chat`: one deployment on the primary simulator with
        `timeouts: {{first_token: {FIRST_TOKEN:g}, idle: {FIRST_TOKEN:g}, connect: 2,
        total: 30}}` and `fallbacks: [backup]`, an alias on the second simulator; the
        routing settings are the defaults (`max_attempts: 3`, `max_seconds: 60`, retry
        budget 0.2, breaker opening at 50 % failures over 30 s). Both simulators take
        {LATENCY['ttft_ms']} ms to the first token and {LATENCY['token_ms']} ms a token
        for {LATENCY['output_tokens']} tokens. Requests go through the openai SDK
        (`max_retries=0`) at concurrency {CONCURRENCY}, JSON and streamed interleaved;
        each phase resets both simulators and sets the primary's fault rates
        ({RATE:.0%} of its calls in all; "5xx" is half 500, half 503). Latency is the
        whole answer (a stream: to its last chunk), measured by the client."""),
        "## Every request answered",
        report.table(["phase", "mode", "requests", "answered", "share", "p50 ms", "p99 ms",
                      "max ms", "p99 within bound", "upstream calls a request (both modes)"], rows),
        para(f"""The bound: the primary's `first_token` ({FIRST_TOKEN:g} s) + the fallback's
        own p99, measured alone at the same concurrency before the phases: {ms(own[False])}
        ms for JSON, {ms(own[True])} ms for streams, so {ms(bound[False])} and
        {ms(bound[True])} ms. Faults the primary injected per phase (of its calls):
        {", ".join(f"{k} {v}" for k, v in faults.items())}. Upstream calls a request
        counts both simulators' calls over the phase's requests: a request whose primary
        call failed costs two, never three — it moves to the fallback before the primary
        is called again."""),
        para("Failures: " + (", ".join(f"{n} x {e}" for e, n in errors.items())
                             if errors else "none") + "."),
        "## Streams dropped after their first tokens",
        para(f"""{len(late.results)} streams, {RATE:.0%} of the primary's dropped after
        {LATE_DROP_TOKENS} tokens: {late_bad} failed, every one with the dialect's error
        event after the tokens it had (the SDK raises
        {", ".join(f"{n} x {e}" for e, n in late_errors.items()) or "nothing"}). These
        are not retried, by design: the client already has part of an answer, and a
        second one from another model would not continue it. Each counts against the
        primary's circuit breaker, and is billed for what the primary generated."""),
        "## Configurations and commands",
        para("Tracebacks and ERROR lines in each process's output over the run: "
             + ", ".join(f"{n} {tb} / {err}" for n, (tb, err) in problems.items()) + "."),
        "```yaml\n" + yaml.safe_dump(res["config"], sort_keys=False) + "```",
        f"```sh\n{harness.commands({work: '$W'})}\n```",
    ]
    return headline, "\n\n".join(body)


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(__doc__)
    ap.add_argument("--requests", type=int, help="JSON requests, and as many streams, over "
                    "all phases (default 2,000; quick 300)")
    args = ap.parse_args(argv)
    args.requests = args.requests or (300 if args.quick else 2000)
    with tempfile.TemporaryDirectory(prefix="tollway-faults-") as tmp:
        with Servers(Path(tmp)) as servers:
            res = harness.run_checked(servers, run(servers, args))
        problems = harness.log_problems(servers)
    headline, body = render(Path(tmp), res, problems)
    report.write(args, title="Faults on the primary", headline=headline, body=body,
                 libraries=("openai", "aiohttp"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
