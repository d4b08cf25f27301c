"""docs/benchmarks.md for the overhead benchmark: method, machine, headline, tables,
and every command that was run."""

from __future__ import annotations

import statistics
from pathlib import Path

import harness
import report
from report import spread, table
from scenario import LABEL, Plan, Scenario

INTRO = """# Benchmarks

Written by `make bench` (`bench/run.py` → `bench/overhead.py`); do not edit by hand.

## Method

Four ways to the same upstream, measured side by side:

- **(a) direct**: the load generator calls the upstream itself;
- **(b) floor**: through `bench/floor_proxy.py`, a bare pass-through proxy (aiohttp
  server → one pooled aiohttp client session, uvloop, no parsing, no features): the
  least work a gateway built on these frameworks can do on this machine;
- **(c) gateway**: through one Tollway worker (`tollway serve`: uvicorn + uvloop +
  httptools, one process);
- **(d) raw floor**, in the non-streaming throughput tables only: through
  `bench/raw_proxy.py`, uvloop protocols and httptools parsers on both sides with one
  asyncio task per request and no web framework. It is not a usable proxy (no streaming,
  timeouts or header handling); it shows what Python itself costs per proxied request on
  this machine, next to what the frameworks cost.

The upstream is the simulator (`python -m tollway.simulate.server`, one Python process),
except in the *near-free upstream* table, whose upstream is `bench/canned_upstream.py`
(a raw asyncio server that sends one fixed reply for a few µs of CPU), to show whether the
simulator is what limits the proxies.

- **Throughput** is closed loop: `wrk` (one thread, {conns} keep-alive connections,
  {dur:g} s), each connection sending again as soon as it has its answer.
- **Latency** is open loop at a constant rate: Debian has no `wrk2`, so
  `bench/loadgen.py` (aiohttp + uvloop, its own process) fires requests on a fixed
  schedule and measures each from its *intended* send time, so a stall cannot hide by
  slowing the generator (no coordinated omission). The first {warm:g} s are sent but not
  counted. *Added* latency is (target - direct) within the same repeat; the generator's
  own cost is in both and cancels out.
- **Streaming**: TTFT is the time to the first body byte; chunks/s counts SSE `data:`
  frames received.
- **CPU** is read from `/proc/PID/stat` (100 % = one core) for the proxy and the
  upstream; *loadgen* is wrk's or loadgen.py's; *other* is everything else on the
  machine over the same interval and *steal* the time the hypervisor ran someone else on
  our vCPUs: both are noise from outside the benchmark. *Proxy µs/req* is the proxy's
  CPU time divided by the requests it served: the machine-independent cost, and
  1,000,000 / µs/req is what one fully used core could serve. Peak RSS is `VmHWM` from
  `/proc/PID/status`.
- Each scenario runs all targets once per repeat ({reps} repeats; {lreps} for the
  constant-rate JSON runs), rotating their order. Figures are the median with
  [min .. max] over the repeats.

Load generator, proxy and upstream share the machine's cores over loopback, so absolute
numbers are lower than on a dedicated box; compare the ratios and µs/req.

Reproduce with `make bench` (full run, about 9 min) or
`.venv/bin/python bench/overhead.py --quick` (about 1 min smoke run, written to
`bench/results/`). `bench/profile.py` profiles the gateway under the same load.
"""

CPU_HEAD = ["proxy CPU %", "upstream CPU %", "loadgen CPU %", "other CPU %", "steal %"]


def ms(values: list[float]) -> str:
    return spread(values, "{:.2f}")


def per_proxy(sc: Scenario, t: str, metric: str) -> str:
    return spread(sc.values(t, metric)) if t != "direct" else "-"


def cpu_cells(sc: Scenario, t: str) -> list[str]:
    return [per_proxy(sc, t, "cpu_proxy"),
            *(spread(sc.values(t, f"cpu_{k}")) for k in ("upstream", "loadgen", "other",
                                                          "steal"))]


def ratios(sc: Scenario, metric: str) -> str:
    pairs = [("gateway", "direct"), ("gateway", "floor"), ("floor", "direct")]
    if "raw" in sc.targets:
        pairs.append(("gateway", "raw"))
    return "Ratios of req/s, per repeat: " + "; ".join(
        f"{a}/{b} = {spread(sc.ratio(a, b, metric), '{:.2f}')}" for a, b in pairs) + "."


def throughput(sc: Scenario) -> str:
    rows = [[LABEL[t], spread(sc.values(t, "rps")), ms(sc.values(t, "lat_p50_ms")),
             ms(sc.values(t, "lat_p99_ms")), per_proxy(sc, t, "proxy_us_per_req"),
             *cpu_cells(sc, t), spread(sc.values(t, "errors"))] for t in sc.targets]
    head = ["target", "req/s", "p50 ms", "p99 ms", "proxy µs/req", *CPU_HEAD, "errors"]
    return table(head, rows) + "\n\n" + ratios(sc, "rps")


def stream_throughput(sc: Scenario) -> str:
    frames: dict[str, int] = sc.params["frames"]
    rows = [[LABEL[t], spread(sc.values(t, "rps")),
             spread([v * frames[t] for v in sc.values(t, "rps")]), str(frames[t]),
             per_proxy(sc, t, "proxy_us_per_req"), *cpu_cells(sc, t),
             spread(sc.values(t, "errors"))] for t in sc.targets]
    head = ["target", "streams/s", "chunks/s", "frames/stream", "proxy µs/stream", *CPU_HEAD,
            "errors"]
    return table(head, rows) + "\n\n" + ratios(sc, "rps")


def added(sc: Scenario, t: str, metric: str) -> str:
    return ms(sc.added(t, metric)) if t != "direct" else "-"


def latency(scs: list[Scenario]) -> str:
    rows = [[f"{sc.params['rate']:g}", LABEL[t], ms(sc.values(t, "lat_p50_ms")),
             ms(sc.values(t, "lat_p99_ms")), added(sc, t, "lat_p50_ms"),
             added(sc, t, "lat_p99_ms"), per_proxy(sc, t, "cpu_proxy"),
             per_proxy(sc, t, "proxy_us_per_req"), spread(sc.values(t, "failed"))]
            for sc in scs for t in sc.targets]
    head = ["req/s", "target", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms",
            "proxy CPU %", "proxy µs/req", "failed"]
    return table(head, rows)


def stream_latency(scs: list[Scenario]) -> str:
    rows = [[f"{sc.params['rate']:g}", LABEL[t], ms(sc.values(t, "ttft_p50_ms")),
             ms(sc.values(t, "ttft_p99_ms")), added(sc, t, "ttft_p50_ms"),
             added(sc, t, "ttft_p99_ms"), spread(sc.values(t, "lat_p50_ms")),
             spread(sc.values(t, "frames_per_s")), per_proxy(sc, t, "cpu_proxy"),
             per_proxy(sc, t, "proxy_us_per_req"), spread(sc.values(t, "failed"))]
            for sc in scs for t in sc.targets]
    head = ["streams/s", "target", "TTFT p50 ms", "TTFT p99 ms", "added TTFT p50 ms",
            "added TTFT p99 ms", "whole stream p50 ms", "chunks/s", "proxy CPU %",
            "proxy µs/stream", "failed"]
    return table(head, rows)


def med(sc: Scenario, t: str, metric: str) -> float:
    return statistics.median(sc.values(t, metric))


def headline(by: dict[str, Scenario], plan: Plan) -> str:
    thr, free, sthr = by["json_throughput"], by["near_free"], by["stream_throughput"]

    def both(sc: Scenario, metric: str, unit: str = "") -> list[str]:
        return [spread(sc.values(t, metric)) + unit if t in sc.targets else "-"
                for t in ("gateway", "floor", "raw")]

    def cost(sc: Scenario) -> str:
        times = med(sc, "gateway", "proxy_us_per_req") / med(sc, "floor", "proxy_us_per_req")
        return f"gateway = {times:.2f} x floor"

    rows = [["JSON req/s, one worker, simulator upstream", "≥ 4,000", *both(thr, "rps"),
             verdict(med(thr, "gateway", "rps") >= 4000)],
            ["JSON req/s, near-free upstream", "≥ 4,000", *both(free, "rps"),
             verdict(med(free, "gateway", "rps") >= 4000)]]
    if "json_latency_500" in by:
        lat = by["json_latency_500"]
        gw, fl = (ms(lat.added(t, "lat_p50_ms")) + " ms" for t in ("gateway", "floor"))
        rows.append(["added p50 latency at 500 req/s", "≤ 1 ms", gw, fl, "-",
                     verdict(statistics.median(lat.added("gateway", "lat_p50_ms")) <= 1.0)])
    rows.append(["CPU per JSON request (simulator upstream)", "",
                 *both(thr, "proxy_us_per_req", " µs"), cost(thr)])
    rows.append([f"streams/s, {plan.stream_tokens} chunks each, no token delay", "",
                 *both(sthr, "rps"), ""])
    rows.append(["CPU per stream", "", *both(sthr, "proxy_us_per_req", " µs"), cost(sthr)])
    top = max((sc for sc in by.values() if sc.kind == "stream_latency"),
              key=lambda sc: sc.params["rate"], default=None)
    if top is not None:
        ttft = [ms(top.added(t, "ttft_p50_ms")) + " ms" for t in ("gateway", "floor")]
        rows.append([f"added TTFT p50 at {top.params['rate']:g} streams/s", "", *ttft, "-",
                     ""])
    return table(["figure", "target", "(c) gateway", "(b) floor", "(d) raw floor", ""], rows)


def background(results: list[Scenario]) -> str:
    """How busy the machine was with other work while we measured: the figures are only
    as good as this is low."""
    runs = [r for sc in results for rs in sc.runs.values() for r in rs]
    other = spread([r["cpu_other"] for r in runs])
    steal = spread([r["cpu_steal"] for r in runs])
    return (f"Background during the runs (median [min .. max] over all {len(runs)} runs, "
            f"100 % = one core): other processes {other} %, hypervisor steal {steal} %.")


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def memory(rows: list[tuple[str, int, int]]) -> str:
    return table(["process", "peak RSS MiB", "RSS at end MiB"],
                 [[n, f"{hwm / 1024:.0f}", f"{rss / 1024:.0f}"] for n, hwm, rss in rows])


def commands(work: Path) -> str:
    seen = list(dict.fromkeys(harness.COMMANDS))  # in order, without repeats
    body = (work / "json.json").read_text() + "\n" + (work / "sse.json").read_text()
    return (
        "Every command the run executed, in order (1 s warm-up wrk runs per target left "
        "out); `$W` is the run's scratch directory, and `$W/canned-reply.json` is the "
        "simulator's answer to `json.json`, captured at start.\n\n"
        "```sh\n" + "\n".join(seen).replace(str(work), "$W") + "\n```\n\n"
        "Request bodies (`$W/json.json`, `$W/sse.json`):\n\n```json\n" + body + "\n```\n\n"
        "Gateway config (`$W/gateway-sim.yaml`; `gateway-canned.yaml` differs only in the "
        "port):\n\n```yaml\n" + (work / "gateway-sim.yaml").read_text() + "```")


def render(plan: Plan, results: list[Scenario], mem: list[tuple[str, int, int]], work: Path,
           elapsed: float, *, quick: bool) -> str:
    by = {sc.key: sc for sc in results}
    parts = [INTRO.format(conns=plan.connections, dur=plan.duration, warm=plan.warmup,
                          reps=plan.repeats, lreps=plan.lat_repeats).rstrip()]
    if quick:
        parts.append("> **Quick mode** (`--quick`): one short repeat, a smoke test only.")
    parts += ["## Machine", report.machine_table(),
              f"Whole run: {elapsed / 60:.1f} min. " + background(results),
              "## Headline", headline(by, plan)]
    for sc in results:
        if sc.kind == "throughput":
            parts += [f"## {sc.title}", throughput(sc)]
        elif sc.kind == "stream_throughput":
            parts += [f"## {sc.title}", stream_throughput(sc)]
    parts += ["## Non-streaming latency at a constant rate (open loop)",
              latency([sc for sc in results if sc.kind == "latency"]),
              f"## Streaming latency at a constant rate (open loop, {plan.stream_tokens} "
              f"tokens at {plan.token_ms:g} ms/token)",
              stream_latency([sc for sc in results if sc.kind == "stream_latency"]),
              "## Memory", memory(mem), "## Commands", commands(work)]
    return "\n\n".join(parts) + "\n"
