"""What a batch costs to run through Tollway (issue 20: lines per second through the
local runner, and the overhead per line of the provider-batch path).

One simulator (no time to first token, no time per token, 16-token answers, its batch
API answering a batch's lines at once: `batch_delay_s` 0) and one gateway (embedded
store, its alias `gpt-4o-mini` an OpenAI-compatible deployment on the simulator). Every
request carries a virtual key with a dollar budget and an rpm limit that never bind,
so a batch holds every line's worst case when it is created and each line, like each
interactive request, settles its cost and writes a ledger row.

The same N chat-completion lines (each its own question) go, per repeat and in a
rotated order, to:

- **batch, local runner**: the official openai SDK against the gateway: `files.create`
  (the JSONL), `batches.create`, `batches.retrieve` every 50 ms until it is completed,
  `files.content` of the output; the gateway's runner answers the lines 8 at a time
  through its request path, each an interactive call upstream.
- **interactive**: the same N requests to the gateway's `/v1/chat/completions`, 8 at
  a time (the runner's concurrency; aiohttp, each worker sends again as soon as it has
  its answer).
- **batch, simulator's own API**: the same JSONL and SDK calls straight to the
  simulator's `/v1/files` and `/v1/batches`, the baseline of the provider-batch path.
- **batch, forwarded upstream**: the same SDK calls to a second gateway whose
  deployment sends batches to the provider's batch API (`batch: upstream`, with
  `--upstream-batch`), so the gateway's CPU per line on that path is measured by the
  same code once the path exists; until the gateway's configuration knows the
  option, its row says "not built".

Lines/s is N over the wall time from the upload (the first request) to the results
downloaded (the last answer). CPU is each process's `/proc/PID/stat` from just before
until it is idle again after (the ledger's rows flushed), over N; the client's own CPU
(this process) beside it.

    .venv/bin/python bench/batches.py                  # 7 repeats of 2,000 lines, ~1.5 min
    .venv/bin/python bench/batches.py --quick          # 1 repeat of 200 -> bench/results/
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson

import cli
import features_target
import harness
import report
from harness import CHAT, Server, Servers
from procfs import CpuSnapshot, wait_idle
from report import spread
from tollway.config.loading import parse
from tollway.errors import ConfigError

MODEL = "gpt-4o-mini"  # a model the simulator's batch API knows and prices
CONCURRENCY = 8  # the local runner's (BatchRunner.concurrency), and the interactive client's
POLL_S = 0.05
SETTLE_S = 1.2  # the ledger's flush_seconds (1.0) and a little more
# The provider-batch path (being built): the deployment option that sends a batch to
# the provider's own batch API. The one place to change if it lands under another name.
UPSTREAM_OPTION = {"batches": "upstream"}


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    base_url: str  # the OpenAI API's base, .../v1
    api_key: str
    gateway: Server | None  # the gateway measured; None: straight to the simulator
    batch: bool  # a batch (files + batches) or the same requests interactively


@dataclass
class Sample:
    """One target in one repeat."""

    wall_s: float
    run_s: float  # a batch: from created to seen completed; interactive: wall_s
    cpu_s: dict[str, float]  # gateway, simulator, client: CPU seconds over the run
    ok: int  # lines (requests) answered 200
    upstream_calls: int  # interactive requests the simulator answered
    upstream_lines: int  # batch lines the simulator answered


@dataclass
class Figures:
    samples: list[Sample] = field(default_factory=list)

    def lines_per_s(self, n: int, running: bool = False) -> list[float]:
        """Over the whole wall time, or (`running`) only while the batch ran."""
        return [n / (s.run_s if running else s.wall_s) for s in self.samples]

    def cpu_us(self, proc: str, n: int) -> list[float]:
        return [1e6 * s.cpu_s.get(proc, float("nan")) / n for s in self.samples]


def lines(n: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"req-{i}", "method": "POST", "url": CHAT,
             "body": {"model": MODEL, "max_tokens": 64,
                      "messages": [{"role": "user", "content": f"Question {i}: say hello."}]}}
            for i in range(n)]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def gateway_config(sim_url: str, upstream: bool = False) -> dict[str, Any]:
    dep = harness.sim_deployment(sim_url, MODEL, **(UPSTREAM_OPTION if upstream else {}))
    return {"models": {MODEL: {"deployments": [dep]}},
            "prices": {MODEL: features_target.PRICE},
            # The gateway polls the provider's batch as often as the client polls it.
            **({"server": {"batch_poll_seconds": POLL_S}} if upstream else {})}


def upstream_not_built(sim_url: str) -> str | None:
    """Why this code's gateway cannot forward batches upstream (its configuration
    refuses the option), or None when it can."""
    try:
        parse(gateway_config(sim_url, upstream=True), env={})
    except ConfigError as e:
        return str(e)
    return None


def sim_counts(sim: Server) -> tuple[int, int]:
    """(interactive requests, batch lines) the simulator answered so far."""
    stats = orjson.loads(harness.http("GET", sim.url + "/_sim/stats"))
    return int(stats["requests"]), int(stats["batches"]["lines"])


# -- the two ways of sending N requests ---------------------------------------------------


async def run_batch(t: Target, content: bytes, n: int) -> tuple[int, float]:
    """Upload, create, poll until it ends, download: the lines answered 200, and the
    seconds from the batch created to seen completed."""
    async with openai.AsyncOpenAI(base_url=t.base_url, api_key=t.api_key, max_retries=0,
                                  timeout=120) as c:
        f = await c.files.create(file=("lines.jsonl", content), purpose="batch")
        b = await c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")
        created = time.perf_counter()
        while b.status not in ("completed", "failed", "expired", "cancelled"):
            await asyncio.sleep(POLL_S)
            b = await c.batches.retrieve(b.id)
        run_s = time.perf_counter() - created
        if b.status != "completed" or b.output_file_id is None:
            raise RuntimeError(f"{t.label}: batch {b.id} ended {b.status}: {b.errors}")
        out = (await c.files.content(b.output_file_id)).content.splitlines()
    got = [orjson.loads(x) for x in out]
    if [r["custom_id"] for r in got] != [f"req-{i}" for i in range(n)]:
        raise RuntimeError(f"{t.label}: batch {b.id}: output not the {n} lines in order")
    return sum(r["response"]["status_code"] == 200 for r in got), run_s


async def run_interactive(t: Target, bodies: list[bytes]) -> int:
    """The requests, CONCURRENCY at a time: how many were answered 200."""
    todo: Iterator[bytes] = iter(bodies)
    ok = 0

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal ok
        for body in todo:
            async with http.post(t.base_url.removesuffix("/v1") + CHAT, data=body) as r:
                await r.read()
                ok += r.status == 200

    headers = {"Authorization": f"Bearer {t.api_key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as http:
        await asyncio.gather(*(worker(http) for _ in range(CONCURRENCY)))
    return ok


async def run_once(t: Target, sim: Server, rows: list[dict[str, Any]]) -> Sample:
    """One target sends the N lines; its wall time, and each process's CPU until idle."""
    procs = {"simulator": [sim.pid], **({"gateway": [t.gateway.pid]} if t.gateway else {})}
    content, bodies = jsonl(rows), [orjson.dumps(r["body"]) for r in rows]
    wait_idle([p for ps in procs.values() for p in ps], within=10.0, quiet=0.005)
    calls0, lines0 = sim_counts(sim)
    a, client0 = CpuSnapshot.take(procs), time.process_time()
    t0 = time.perf_counter()
    if t.batch:
        ok, run_s = await run_batch(t, content, len(rows))
    else:
        ok = await run_interactive(t, bodies)
    wall = time.perf_counter() - t0
    run_s = run_s if t.batch else wall
    client = time.process_time() - client0
    await asyncio.sleep(SETTLE_S)  # the ledger's next flush belongs to these lines too
    wait_idle([p for ps in procs.values() for p in ps], within=5.0, quiet=0.005)
    cpu = CpuSnapshot.take(procs).seconds_since(a)
    calls1, lines1 = sim_counts(sim)
    return Sample(wall, run_s, {**cpu, "client": client}, ok, calls1 - calls0,
                  lines1 - lines0)


async def measure(targets: list[Target], sim: Server, n: int, repeats: int
                  ) -> dict[str, Figures]:
    figs = {t.key: Figures() for t in targets}
    for t in targets:  # warm-up, and a check that every path answers
        await run_once(t, sim, lines(min(50, n)))
    rows = lines(n)
    for rep in range(repeats):
        for t in targets[rep % len(targets):] + targets[:rep % len(targets)]:
            if t.gateway is not None:
                t.gateway.check_alive()
            s = await run_once(t, sim, rows)
            if t.key == "upstream" and (s.upstream_calls or s.upstream_lines != n):
                raise RuntimeError(f"{t.label}: the simulator answered {s.upstream_calls} "
                                   f"calls and {s.upstream_lines} batch lines for {n} lines, "
                                   "not the batch: the path was not taken")
            figs[t.key].samples.append(s)
            per = {k: f"{1e6 * v / n:5.0f}" for k, v in s.cpu_s.items()}
            cli.log(f"#{rep + 1} {t.key:12s} {n / s.wall_s:6.0f} lines/s, CPU µs/line {per}, "
                    f"ok {s.ok}/{n}, upstream calls {s.upstream_calls} "
                    f"batch lines {s.upstream_lines}")
    return figs


# -- the report -------------------------------------------------------------------------


def ratio(a: list[float], b: list[float]) -> float:
    """The median of the per-repeat ratios a/b."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def render(targets: list[Target], figs: dict[str, Figures], n: int, repeats: int,
           not_built: str | None) -> tuple[str, str]:
    """`not_built`: why the gateway has no provider-batch path (None: it has one)."""
    base = figs["interactive"]
    rows = []
    for t in targets:
        f = figs[t.key]
        gw = f.cpu_us("gateway", n)
        rows.append([
            t.label, spread(f.lines_per_s(n)),
            f"{ratio(f.lines_per_s(n), base.lines_per_s(n)):.2f}",
            spread(f.lines_per_s(n, running=True)) if t.batch else "-",
            spread(gw) if t.gateway else "-",
            f"{ratio(gw, base.cpu_us('gateway', n)):.2f}" if t.gateway else "-",
            spread(f.cpu_us("simulator", n)), spread(f.cpu_us("client", n)),
            f"{sum(s.upstream_calls for s in f.samples) / (n * repeats):.2f} / "
            f"{sum(s.upstream_lines for s in f.samples) / (n * repeats):.2f}",
            str(sum(n - s.ok for s in f.samples))])
    if "upstream" not in figs:
        rows.append(["batch, forwarded upstream (`batches: upstream`)",
                     "not built" if not_built else "not measured (`--upstream-batch`)",
                     *[""] * 8])
    table = report.table(
        ["path", "lines/s", "/ interactive's (same repeat)", "lines/s, created to completed",
         "gateway CPU µs / line",
         "/ interactive's (same repeat)", "simulator CPU µs / line", "client CPU µs / line",
         "simulator calls / batch lines per line", "not 200"], rows)
    local, direct = figs["local"], figs["direct"]
    lps, gw = local.lines_per_s(n), local.cpu_us("gateway", n)
    runs = local.lines_per_s(n, running=True)
    headline = (
        f"the local runner answers a {n:,}-line batch at {statistics.median(lps):,.0f} lines/s "
        f"from upload to download ({statistics.median(runs):,.0f}/s from created to "
        f"completed), {ratio(lps, base.lines_per_s(n)):.2f}x the same requests sent "
        f"interactively 8 at a time, at {statistics.median(gw):,.0f} µs of gateway CPU a line, "
        f"{ratio(gw, base.cpu_us('gateway', n)):.2f}x an interactive request's; ")
    if "upstream" in figs:
        up = figs["upstream"].cpu_us("gateway", n)
        headline += (f"forwarded to the provider's batch API, {statistics.median(up):,.0f} µs "
                     f"a line ({ratio(up, gw):.2f}x the local runner's).")
    else:
        state = "not built yet" if not_built else "not measured"
        headline += (f"the provider-batch path is {state} (the simulator's own batch API "
                     f"alone: "
                     f"{statistics.median(direct.lines_per_s(n)):,.0f} lines/s).")
    why = ("" if not_built is None else
           f" This run's gateway refuses the option (`{not_built}`): the row says \"not "
           f"built\".")
    body = "\n\n".join([
        "## Method", "\n\n".join((__doc__ or "").split("\n\n")[1:5]),
        report.para(f"{repeats} repeat{'s' if repeats > 1 else ''} of {n:,} lines; the "
                    "paths take turns in each repeat, the first rotating. Figures are "
                    "medians [min .. max] over the repeats; "
                    "a ratio is taken within each repeat, then the median of those. "
                    f"Batches are polled every {POLL_S * 1000:.0f} ms, so a batch's wall time "
                    f"is up to that much longer than its work; the polls' own CPU is in the "
                    f"gateway's.{why}"),
        "## Results", table,
        report.para("""*lines/s*: from the upload to the results downloaded (interactive:
            from the first request sent to the last answer); *created to completed*: from
            `batches.create` answered to the poll that saw it completed. *simulator calls /
            batch lines per line*: what the simulator answered per line, as interactive
            calls and as lines of its own batch API; the local runner makes one interactive
            call a line, the provider-batch path none (its lines go to the simulator's batch
            API). *not 200*: lines (requests) not answered 200, over all repeats.""")])
    return headline, body


def start(sv: Servers, n: int, upstream_batch: bool) -> tuple[Server, list[Target], str | None]:
    """The simulator, the gateway (and with `upstream_batch` the gateway forwarding
    batches, if this code has it), a key on each: the paths to measure, and why the
    provider-batch path is not built (None: it is)."""
    sim = harness.start_simulator(sv)
    harness.sim_config(sim, ttft_ms=0, token_ms=0, output_tokens=16, batch_delay_s=0)
    not_built = upstream_not_built(sim.url)
    gws = {"local": harness.start_gateway(sv, "gateway", gateway_config(sim.url), master=True)}
    if upstream_batch and not_built is None:
        gws["upstream"] = harness.start_gateway(
            sv, "gateway-upstream", gateway_config(sim.url, upstream=True), master=True)
    keys = {k: harness.create_key(gw, features_target.KEY) for k, gw in gws.items()}
    local = gws["local"]
    targets = [
        Target("local", "batch, local runner", local.url + "/v1", keys["local"], local, True),
        Target("interactive", "interactive, 8 at a time", local.url + "/v1", keys["local"],
               local, False),
        Target("direct", "batch, the simulator's own API", sim.url + "/v1", "sim", None, True),
        *([Target("upstream", "batch, forwarded upstream (`batches: upstream`)",
                  gws["upstream"].url + "/v1", keys["upstream"], gws["upstream"], True)]
          if "upstream" in gws else [])]
    for t in targets:
        how = (f"openai.AsyncOpenAI(base_url={t.base_url!r}): files.create($W/lines-{n}"
               f".jsonl), batches.create, batches.retrieve every {POLL_S:g} s, "
               "files.content" if t.batch else
               f"aiohttp: POST {t.base_url.removesuffix('/v1')}{CHAT}, each line's body, "
               f"{CONCURRENCY} at a time")
        harness.COMMANDS.append(f"# {t.label}: {how}")
    return sim, targets, not_built


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(__doc__)
    ap.add_argument("--lines", type=int, default=2000, help="lines a batch (quick: 200)")
    ap.add_argument("--repeats", type=int, default=7, help="(quick: 1)")
    ap.add_argument("--upstream-batch", action="store_true",
                    help="also measure a gateway whose deployment has `batch: upstream` "
                         "(the provider-batch path), if this code has it")
    args = ap.parse_args(argv)
    n, repeats = (200, 1) if args.quick else (args.lines, args.repeats)
    with tempfile.TemporaryDirectory(prefix="bench-batches-") as tmp:
        work = Path(tmp)
        (work / f"lines-{n}.jsonl").write_bytes(jsonl(lines(n)))
        with Servers(work) as sv:
            sim, targets, not_built = start(sv, n, args.upstream_batch)
            figs = harness.run_checked(sv, measure(targets, sim, n, repeats))
        problems = harness.log_problems(sv)
        shown = "\n\n".join([
            "## Configuration and commands",
            report.para("Tracebacks and ERROR lines in each process's output over the run, "
                        "shutdown included: " + ", ".join(
                            f"{p} {tb} / {err}" for p, (tb, err) in problems.items()) + "."),
            f"`$W/gateway.yaml`:\n\n```yaml\n{(work / 'gateway.yaml').read_text()}```",
            f"`$W/lines-{n}.jsonl`, its first line (line i asks question i):\n\n"
            f"```json\n{jsonl(lines(1)).decode()}```",
            report.para("""Every command the run executed, in order (`TOLLWAY_MASTER_KEY` is
                        a random secret; the clients, in this process, as comments):"""),
            f"```sh\n{harness.commands({work: '$W'})}\n```"])
    headline, body = render(targets, figs, n, repeats, not_built)
    report.write(args, title="Batches: the local runner and the provider-batch path",
                 headline=headline, body=body + "\n\n" + shown,
                 libraries=["openai", "aiohttp", "uvicorn"])
    report.save_raw({k: [vars(s) for s in f.samples] for k, f in figs.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
