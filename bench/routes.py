"""The Responses route beside the chat route: the gateway's CPU per request and the
latency it adds, side by side in one run (issue 18: the Responses route's added latency
and CPU per request with the chat route's).

One simulator, one gateway (default settings, no key) whose alias `sim-model` is an
OpenAI-compatible deployment on the simulator. Both routes go upstream as Chat
Completions (the Responses route is translated: `wire/responses*.py`), so the difference
between them is the gateway's own work: parsing a Responses body, the stored chain, and
writing a Response object or its event sequence.

Per repeat, for each route and mode (JSON, streamed; the Responses route both with
`store: false` and with the default `store: true`, which keeps every response in the
gateway's store for `previous_response_id`):

- CPU: wrk, closed loop at 16 connections; the gateway's CPU from the start of the run
  until it is idle again after it, per request.
- Added latency: wrk at one connection, through the gateway, and the upstream request
  (Chat Completions, the same for every route of a mode) straight to the simulator; the
  difference of the medians.

Which goes first rotates between repeats.

    .venv/bin/python bench/routes.py              # ~1.3 min
    .venv/bin/python bench/routes.py --quick      # 1 short repeat -> bench/results/
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cli
import harness
import load
import report
from harness import CHAT, Server, Servers
from procfs import CpuSnapshot, wait_idle
from report import spread

RESPONSES = "/v1/responses"
PROMPT = "Say hello in five words."
SETTLE_S = 1.2  # the ledger's flush_seconds (1.0) and a little more


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    path: str
    body: dict[str, Any]
    upstream: dict[str, Any]  # what the gateway sends the simulator for it

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


def cases() -> list[Case]:
    chat: dict[str, Any] = {"model": "sim-model", "max_tokens": 64,
                            "messages": [{"role": "user", "content": PROMPT}]}
    resp: dict[str, Any] = {"model": "sim-model", "max_output_tokens": 64, "input": PROMPT}
    out = []
    for stream in (False, True):
        mode = "stream" if stream else "JSON"
        s = {"stream": True} if stream else {}
        up = {**chat, **s}
        out += [Case(f"chat-{mode}", f"chat completions, {mode}", CHAT, up, up),
                Case(f"responses-{mode}", f"responses, store: false, {mode}", RESPONSES,
                     {**resp, "store": False, **s}, up),
                Case(f"stored-{mode}", f"responses, stored (default), {mode}", RESPONSES,
                     {**resp, **s}, up)]
    return out


@dataclass
class Figures:
    cpu_us: list[float] = field(default_factory=list)  # gateway CPU µs per request
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)  # one connection, through the gateway
    direct_p50_ms: list[float] = field(default_factory=list)  # the same, to the simulator
    errors: int = 0


def body_file(work: Path, name: str, body: dict[str, Any]) -> Path:
    path = work / f"{name}.json"
    path.write_bytes(json.dumps(body, separators=(",", ":")).encode())
    return path


def cpu_run(gw: Server, case: Case, body: Path, seconds: float) -> tuple[float, float, int]:
    pids = {"gateway": [gw.pid]}
    a = CpuSnapshot.take(pids)
    r = load.run_wrk(gw.url + case.path, body, 16, seconds)
    time.sleep(SETTLE_S)  # the ledger's next batch belongs to these requests too
    wait_idle([gw.pid], within=5.0, quiet=0.005)
    cpu_s = CpuSnapshot.take(pids).seconds_since(a)["gateway"]
    return 1e6 * cpu_s / max(r["requests"], 1), r["rps"], r["errors"]


def measure(sim: Server, gw: Server, work: Path, plan: dict[str, float], repeats: int
            ) -> dict[str, Figures]:
    figs = {c.key: Figures() for c in cases()}
    bodies = {c.key: body_file(work, c.key, c.body) for c in cases()}
    upstream = {c.key: body_file(work, f"{c.key}-upstream", c.upstream) for c in cases()}
    for c in cases():  # warm-up, and a check that every route answers
        load.run_wrk(gw.url + c.path, bodies[c.key], 4, plan["warmup"])
    for rep in range(repeats):
        direct: dict[bool, float] = {}
        order = cases()
        order = order[rep % len(order):] + order[:rep % len(order)]
        for c in order:
            gw.check_alive()
            f = figs[c.key]
            cpu, rps, errors = cpu_run(gw, c, bodies[c.key], plan["seconds"])
            one = load.run_wrk(gw.url + c.path, bodies[c.key], 1, plan["latency"])
            if c.stream not in direct:  # the same upstream call for every route of a mode
                direct[c.stream] = load.run_wrk(sim.url + CHAT, upstream[c.key], 1,
                                                plan["latency"])["lat_p50_ms"]
            f.cpu_us.append(cpu)
            f.rps.append(rps)
            f.p50_ms.append(one["lat_p50_ms"])
            f.direct_p50_ms.append(direct[c.stream])
            f.errors += errors + one["errors"]
            cli.log(f"#{rep + 1} {c.key:16s} {cpu:5.0f} µs/request {rps:6.0f}/s "
                    f"p50 {one['lat_p50_ms']:.2f} ms (upstream alone {direct[c.stream]:.2f}) "
                    f"errors {errors + one['errors']}")
    return figs


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def added(f: Figures) -> list[float]:
    return [g - d for g, d in zip(f.p50_ms, f.direct_p50_ms, strict=True)]


def render(figs: dict[str, Figures], plan: dict[str, float], repeats: int) -> tuple[str, str]:
    rows = []
    for c in cases():
        f = figs[c.key]
        base = figs["chat-stream" if c.stream else "chat-JSON"]
        ratio = [a / b for a, b in zip(f.cpu_us, base.cpu_us, strict=True)]
        rows.append([c.label, spread(f.cpu_us), f"{med(ratio):.2f}", spread(f.rps),
                     spread(added(f), "{:.2f}"), spread(f.direct_p50_ms, "{:.2f}"),
                     str(f.errors)])
    table = report.table(["route, mode", "gateway CPU µs / request", "CPU / chat's (same "
                          "repeat)", "requests/s at 16 connections", "added p50 ms",
                          "upstream alone p50 ms", "errors"], rows)

    def r(key: str, mode: str) -> float:
        return med([a / b for a, b in zip(figs[key].cpu_us, figs[f"chat-{mode}"].cpu_us,
                                          strict=True)])
    headline = (f"the Responses route costs {r('responses-JSON', 'JSON'):.2f}x chat's gateway "
                f"CPU per JSON request and {r('responses-stream', 'stream'):.2f}x per stream "
                f"with `store: false`; stored (the default) "
                f"{r('stored-JSON', 'JSON'):.2f}x and {r('stored-stream', 'stream'):.2f}x; "
                f"added p50 latency {med(added(figs['responses-JSON'])):.2f} ms vs chat's "
                f"{med(added(figs['chat-JSON'])):.2f} ms (JSON).")
    body = "\n\n".join([
        "## Method", "\n\n".join((__doc__ or "").split("\n\n")[1:5]),
        report.para(f"{repeats} repeats; CPU runs of {plan['seconds']:g} s at 16 connections, "
                    f"latency runs of {plan['latency']:g} s at one connection. Figures are "
                    "medians [min .. max] over the repeats; a ratio is taken within each "
                    "repeat, then the median of those. The simulator answers at once (no "
                    "time to first token, 16 tokens), so the latency added is the gateway's "
                    "own."),
        "## Results", table])
    return headline, body


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="each CPU run")
    args = ap.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    plan = {"seconds": 1.0 if args.quick else args.seconds, "latency": 1.0,
            "warmup": 1.0}
    with tempfile.TemporaryDirectory(prefix="bench-routes-") as tmp, Servers(Path(tmp)) as sv:
        work = Path(tmp)
        sim, gw = harness.simulator_and_gateway(sv, lambda url: {"models": harness.sim_models(url)})
        harness.sim_config(sim, ttft_ms=0, token_ms=0, output_tokens=16)
        figs = harness.run_checked(sv, _measure(sim, gw, work, plan, repeats))
        shown = harness.commands({work: "$W"})
    headline, body = render(figs, plan, repeats)
    report.write(args, title="The Responses route beside the chat route", headline=headline,
                 body=body + f"\n\n## Commands\n\n```sh\n{shown}\n```",
                 libraries=["uvicorn", "aiohttp"],
                 extra=[("load generator", report.wrk_version())])
    return 0


async def _measure(sim: Server, gw: Server, work: Path, plan: dict[str, float], repeats: int
                   ) -> dict[str, Figures]:
    return measure(sim, gw, work, plan, repeats)


if __name__ == "__main__":
    raise SystemExit(main())
