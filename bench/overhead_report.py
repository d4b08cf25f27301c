"""The overhead benchmark's results (docs/benchmarks/overhead.md): method, targets,
tables, profiles, and every command that was run."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from pathlib import Path

import harness
import hotpath
import litellm_target
from report import spread, table
from scenario import LABEL, Plan, Scenario

# The distributions whose versions matter to these figures.
LIBRARIES = ("uvicorn", "starlette", "aiohttp", "uvloop", "httptools", "orjson", "msgspec")

INTRO = """## Method

Every way to the same upstream, measured side by side in one run:

- **(a) direct**: the load generator calls the upstream itself;
- **(b) floor**: through `bench/floor_proxy.py`, a bare pass-through proxy (aiohttp
  server → one pooled aiohttp client session, uvloop, no parsing, no features): the
  least work a gateway built on these frameworks can do on this machine;
- **(c) gateway**: through one Tollway worker (`tollway serve`: uvicorn + uvloop +
  httptools, one process), default settings, no key;
- **(c1) features**: one Tollway worker with every request under a virtual key that has
  a dollar budget and a per-key rpm limit (neither binds), so each request does the key
  lookup, the rate-limit take, the budget reserve and settle, and writes a ledger row
  (embedded store); **(c2) cached**: the same plus the exact response cache, every
  request the same prompt, so all but the first are hits;
- **(d) LiteLLM**: LiteLLM's proxy ({litellm}, latest from PyPI when its virtualenv
  `bench/.litellm-venv` was created), `litellm --num_workers 1`, the same model pointed at
  the same simulator, spend logs off, no database, the bundled cost map
  (`LITELLM_LOCAL_MODEL_COST_MAP=True`), requests under its master key;
- **(e) raw floor**, in the JSON throughput tables only: through `bench/raw_proxy.py`,
  uvloop protocols and httptools parsers on both sides with one asyncio task per request
  and no web framework. It is not a usable proxy (no streaming, timeouts or header
  handling); it shows what Python itself costs per proxied request on this machine.

The upstream is the simulator (`python -m tollway.simulate.server`, one Python process).
With `--near-free` (not part of `make bench`, to keep it within its time), a further
table has `bench/canned_upstream.py` as the upstream (a raw asyncio server that sends
one fixed reply for a few µs of CPU), to show whether the simulator is what limits the
proxies.

- **Throughput** is closed loop: `wrk` (one thread, {conns} keep-alive connections,
  {dur:g} s), each connection sending again as soon as it has its answer.
- **Latency** is open loop at a constant rate: Debian has no `wrk2`, so
  `bench/loadgen.py` (aiohttp + uvloop, its own process) fires requests on a fixed
  schedule and measures each from its *intended* send time, so a stall cannot hide by
  slowing the generator (no coordinated omission). The first {warm:g} s are sent but not
  counted; a request not answered within {timeout:g} s counts as failed. *Added* latency
  is (target - direct) within the same repeat; the generator's own cost is in both and
  cancels out. Latencies are of the requests that succeeded: read them with the failed
  column.
- **Streaming**: TTFT is the time to the first body byte; chunks/s counts SSE `data:`
  frames received; in the closed-loop stream table it is wrk's bytes received per second
  over the bytes per frame of that target's reply (headers included, so a little high),
  which counts the streams still running when the run ends too: a proxy slow enough to
  finish few streams in the run still shows its pace.
- **CPU** is read from `/proc/PID/stat` (100 % = one core) for the proxy and the
  upstream; *loadgen* is wrk's or loadgen.py's; *other* is everything else on the
  machine over the same interval and *steal* the time the hypervisor ran someone else on
  our vCPUs: both are noise from outside the benchmark. *Proxy µs/req* is the proxy's
  CPU time divided by the requests it served: the machine-independent cost, and
  1,000,000 / µs/req is what one fully used core could serve. Peak RSS is `VmHWM` from
  `/proc/PID/status`, restarted (`/proc/PID/clear_refs`) at the start of each scenario,
  so it is the peak during that scenario.
- Each scenario runs all targets once per repeat ({reps} repeats; {lreps} for the
  constant-rate JSON runs), rotating their order. Figures are the median with
  [min .. max] over the repeats. LiteLLM, when it cannot keep up with an open-loop rate
  (over 1 % failed), is measured once there, restarted (it would go on working off the
  abandoned requests for minutes, stealing CPU from the next target) and left out of
  that scenario's later repeats: its failure rate is the finding. Once more than half
  its requests failed at one constant rate, it is not run at the higher ones.

Load generator, proxy and upstream share the machine's cores over loopback, so absolute
numbers are lower than on a dedicated box; compare the ratios and µs/req.

`--quick` runs a smoke test written to `bench/results/`. The profiles at the end are
taken by the same run; `bench/profile.py` profiles the gateway alone.
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
    pairs = [(a, b) for a, b in (("gateway", "direct"), ("gateway", "floor"),
                                 ("features", "floor"), ("cached", "floor"),
                                 ("floor", "direct"), ("gateway", "litellm"),
                                 ("features", "litellm"), ("gateway", "raw"))
             if a in sc.targets and b in sc.targets]
    return "Ratios of req/s, per repeat: " + "; ".join(
        f"{a}/{b} = {spread(sc.ratio(a, b, metric), '{:.2f}')}" for a, b in pairs) + "."


def notes(sc: Scenario) -> str:
    return "".join(f"\n\n{n}." for n in sc.notes)


def throughput(sc: Scenario) -> str:
    rows = [[LABEL[t], spread(sc.values(t, "rps")), ms(sc.values(t, "lat_p50_ms")),
             ms(sc.values(t, "lat_p99_ms")), per_proxy(sc, t, "proxy_us_per_req"),
             *cpu_cells(sc, t), spread(sc.values(t, "errors"))] for t in sc.targets]
    head = ["target", "req/s", "p50 ms", "p99 ms", "proxy µs/req", *CPU_HEAD, "errors"]
    return table(head, rows) + "\n\n" + ratios(sc, "rps") + notes(sc)


def chunks_per_s(sc: Scenario, t: str) -> list[float]:
    per: float = sc.params["frame_bytes"][t]
    return [r["bytes"] / (r["duration_us"] / 1e6) / per for r in sc.runs[t]]


def stream_throughput(sc: Scenario) -> str:
    frames: dict[str, int] = sc.params["frames"]
    rows = [[LABEL[t], spread(sc.values(t, "rps")),
             spread(chunks_per_s(sc, t)), str(frames[t]),
             per_proxy(sc, t, "proxy_us_per_req"), *cpu_cells(sc, t),
             spread(sc.values(t, "errors"))] for t in sc.targets]
    head = ["target", "streams/s", "chunks/s", "frames/stream", "proxy µs/stream", *CPU_HEAD,
            "errors"]
    return table(head, rows) + "\n\n" + ratios(sc, "rps") + notes(sc)


def added(sc: Scenario, t: str, metric: str) -> str:
    return ms(sc.added(t, metric)) if t != "direct" else "-"


def failed(sc: Scenario, t: str) -> str:
    """Failed requests (of those sent in the measured window), with the share if any."""
    runs = sc.runs[t]
    n, sent = sum(r["failed"] for r in runs), sum(r["sent"] for r in runs)
    share = f" ({100 * n / sent:.1f} %)" if n and sent else ""
    return spread([r["failed"] for r in runs]) + share


def latency(scs: list[Scenario]) -> str:
    rows = [[f"{sc.params['rate']:g}", LABEL[t], ms(sc.values(t, "lat_p50_ms")),
             ms(sc.values(t, "lat_p99_ms")), added(sc, t, "lat_p50_ms"),
             added(sc, t, "lat_p99_ms"), per_proxy(sc, t, "cpu_proxy"),
             per_proxy(sc, t, "proxy_us_per_req"), failed(sc, t)]
            for sc in scs for t in sc.targets]
    head = ["req/s", "target", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms",
            "proxy CPU %", "proxy µs/req", "failed"]
    return table(head, rows) + "".join(notes(sc) for sc in scs)


def sustained(sc: Scenario, t: str) -> str:
    """Streams one fully used core would carry at once at this pace: streams/s per core
    (1e6 / µs per stream) times how long each stream lasts."""
    if t == "direct":
        return "-"
    est = [1e6 / r["proxy_us_per_req"] * r["lat_p50_ms"] / 1000 for r in sc.runs[t]
           if r["proxy_us_per_req"] and r["failed"] == 0]
    return spread(est) if est else "-"


def stream_latency(scs: list[Scenario]) -> str:
    rows = [[f"{sc.params['rate']:g}", LABEL[t], ms(sc.values(t, "ttft_p50_ms")),
             ms(sc.values(t, "ttft_p99_ms")), added(sc, t, "ttft_p50_ms"),
             added(sc, t, "ttft_p99_ms"), spread(sc.values(t, "lat_p50_ms")),
             spread(sc.values(t, "frames_per_s")), per_proxy(sc, t, "cpu_proxy"),
             per_proxy(sc, t, "proxy_us_per_req"), sustained(sc, t), failed(sc, t)]
            for sc in scs for t in sc.targets]
    head = ["streams/s", "target", "TTFT p50 ms", "TTFT p99 ms", "added TTFT p50 ms",
            "added TTFT p99 ms", "whole stream p50 ms", "chunks/s", "proxy CPU %",
            "proxy µs/stream", "concurrent streams one core sustains (est.)", "failed"]
    return table(head, rows) + "".join(notes(sc) for sc in scs)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def peak_rss_mib(results: list[Scenario], t: str) -> list[float]:
    return [sc.peak_rss_kib[t] / 1024 for sc in results if t in sc.peak_rss_kib]


EACH = ("gateway", "features", "floor")
TARGETS_NOTE = (
    "The floor's column is what a bare pass-through proxy on the same frameworks reaches "
    "on this machine (its speed: *CPU speed* above): a latency target the floor misses "
    "too is beyond this machine for any proxy built this way, so read the gateway "
    "against the floor. Why each cost is what it is, and what would cut it: *Profiles of "
    "the hot path* below.")


def targets(by: dict[str, Scenario], results: list[Scenario]) -> str:
    """The issue's acceptance figures for one worker, default and with features on."""
    thr = by["json_throughput"]
    lat = by.get("json_latency_500")
    top = max((sc for sc in results if sc.kind == "stream_latency"),
              key=lambda sc: sc.params["rate"], default=None)

    def row(figure: str, goal: str, values: dict[str, list[float]], fmt: str,
            ok: Callable[[float], bool], ok_c1: Callable[[float], bool] | None = None,
            ) -> list[str]:
        cells = []
        for t, test in (("gateway", ok), ("features", ok_c1 or ok)):
            v = values.get(t, [])
            cells.append(f"{spread(v, fmt)} ({verdict(test(med(v)))})" if v else "-")
        floor = values.get("floor", [])  # what this machine allows a proxy at all
        return [figure, goal, *cells, spread(floor, fmt) if floor else "-"]

    rows = [row("req/s / floor's, JSON closed loop", "≥ 0.80 (c), ≥ 0.50 (c1)",
                {t: thr.ratio(t, "floor", "rps") for t in ("gateway", "features")}, "{:.2f}",
                lambda v: v >= 0.8, lambda v: v >= 0.5)]
    if "litellm" in thr.targets:
        rows.append(row("req/s / LiteLLM's, JSON closed loop", "≥ 30",
                        {t: thr.ratio(t, "litellm", "rps") for t in EACH},
                        "{:.1f}", lambda v: v >= 30))
    if lat is not None:
        rows.append(row("added p50 at 500 req/s, ms", "≤ 1",
                        {t: lat.added(t, "lat_p50_ms") for t in EACH},
                        "{:.2f}", lambda v: v <= 1))
        rows.append(row("added p99 at 500 req/s, ms", "≤ 5",
                        {t: lat.added(t, "lat_p99_ms") for t in EACH},
                        "{:.2f}", lambda v: v <= 5))
    if top is not None:
        rows.append(row(f"added TTFT p50 at {top.params['rate']:g} streams/s, ms", "≤ 1",
                        {t: top.added(t, "ttft_p50_ms") for t in EACH},
                        "{:.2f}", lambda v: v <= 1))
    rows.append(row("peak RSS over the scenarios, MiB", "≤ 150",
                    {t: [max(peak_rss_mib(results, t), default=math.nan)] for t in EACH},
                    "{:.0f}", lambda v: v <= 150))
    return (table(["figure", "target", "(c) gateway", "(c1) features on",
                   "(b) floor, for reference"], rows) + "\n\n" + TARGETS_NOTE)


def side_by_side(by: dict[str, Scenario], results: list[Scenario]) -> str:
    """The figures of every target in one table (medians over the repeats)."""
    thr, sthr = by["json_throughput"], by["stream_throughput"]
    cols = [t for t in thr.targets if t != "raw"]

    def cell(sc: Scenario | None, t: str, f: Callable[[Scenario, str], list[float]],
             fmt: str = "{:,.0f}") -> str:
        return spread(f(sc, t), fmt) if sc is not None and t in sc.targets else "-"

    rows = [["JSON req/s (64 connections)", *(cell(thr, t, lambda s, t: s.values(t, "rps"))
                                              for t in cols)],
            ["… / floor's", *(cell(thr, t, lambda s, t: s.ratio(t, "floor", "rps"), "{:.2f}")
                              for t in cols)],
            ["proxy CPU µs per JSON request", *("-" if t == "direct" else
                                                cell(thr, t, lambda s, t: s.values(
                                                    t, "proxy_us_per_req")) for t in cols)]]
    for rate in (200, 500, 1000):
        sc = by.get(f"json_latency_{rate}")
        rows.append([f"added p50 / p99 ms at {rate} req/s", *(
            "-" if t == "direct" or sc is None or t not in sc.targets else
            f"{cell(sc, t, lambda s, t: s.added(t, 'lat_p50_ms'), '{:.2f}')} / "
            f"{cell(sc, t, lambda s, t: s.added(t, 'lat_p99_ms'), '{:.2f}')}"
            + (f", {failed(sc, t)} failed" if sum(sc.values(t, "failed")) else "")
            for t in cols)])
    top = max((sc for sc in results if sc.kind == "stream_latency"),
              key=lambda sc: sc.params["rate"], default=None)
    if top is not None:
        rows.append([f"added TTFT p50 ms at {top.params['rate']:g} streams/s", *(
            "-" if t == "direct" else cell(top, t, lambda s, t: s.added(t, "ttft_p50_ms"),
                                           "{:.2f}") for t in cols)])
    rows.append(["chunks/s, closed-loop streams", *(
        cell(sthr, t, chunks_per_s)
        for t in cols)])
    rows.append(["peak RSS MiB (max over scenarios)", *(
        "-" if t == "direct" else f"{max(peak_rss_mib(results, t), default=0):.0f}"
        for t in cols)])
    return table(["figure", *(LABEL[t] for t in cols)], rows)


def background(results: list[Scenario]) -> str:
    """How busy the machine was with other work while we measured: the figures are only
    as good as this is low."""
    runs = [r for sc in results for rs in sc.runs.values() for r in rs]
    other = spread([r["cpu_other"] for r in runs])
    steal = spread([r["cpu_steal"] for r in runs])
    return (f"Background during the runs (median [min .. max] over all {len(runs)} runs, "
            f"100 % = one core): other processes {other} %, hypervisor steal {steal} %.")


def memory(results: list[Scenario], rows: list[tuple[str, int, int]]) -> str:
    cols = list(dict.fromkeys(t for sc in results for t in sc.peak_rss_kib))
    per = table(["scenario", *(LABEL[t] for t in cols)],
                [[sc.title, *(f"{sc.peak_rss_kib[t] / 1024:.0f}" if t in sc.peak_rss_kib
                              else "-" for t in cols)] for sc in results])
    end = table(["process", "peak RSS MiB (since the last reset)", "RSS at end MiB"],
                [[n, f"{hwm / 1024:.0f}", f"{rss / 1024:.0f}"] for n, hwm, rss in rows])
    return ("Peak RSS of each proxy during each scenario, MiB:\n\n" + per +
            "\n\nEvery process at the end of the run:\n\n" + end)


# What would cut each kind of cost, for the note under the profiles.
FIXES = {
    hotpath.CLIENT: "aiohttp's `ClientSession` does per request more than a gateway "
    "talking to a few known upstreams needs (a timeout handle, a request and a response "
    "object, header multidicts, cookie and redirect handling); the raw floor above does "
    "the same upstream leg with a uvloop protocol and httptools for a fraction of the "
    "CPU, so a slim pooled HTTP/1.1 client in `providers/http.py` is the largest single "
    "saving on offer",
    hotpath.SERVER: "uvicorn's httptools protocol builds an ASGI scope and message dicts "
    "per request and writes through them; serving the chat routes from a uvloop protocol "
    "of our own (the raw floor's edge) would drop that layer",
    hotpath.LOOP: "per request the edge starts tasks (the handler and the disconnect "
    "watch) and timer handles; watching for a disconnect from the protocol's "
    "`connection_lost` instead of a task per request would drop one task and its "
    "wake-ups",
    "Tollway's own code: policy": "keys, rate limits and budgets (`policy/`) run per "
    "request; their store calls are in memory (`MemoryLimits.take`, the budget reserve "
    "and settle), so this is the Python per request around them: the functions table "
    "and the flame graph say which call to slim first",
    hotpath.LEDGER: "the ledger's batch write (a SQLite transaction per flush on the "
    "store's thread) shares the worker's GIL with the event loop; fewer, larger batches "
    "(`ledger.flush_seconds`) or a writer process of its own would take it off the "
    "worker's core",
}


def per_request(p: hotpath.Profile, thr: Scenario | None) -> dict[str, float]:
    """Each kind of cost in µs of the worker's CPU per request: its share of the samples
    times the µs/req of the same worker in the JSON throughput runs (same load)."""
    if thr is None or p.name not in thr.targets:
        return {}
    us = med(thr.values(p.name, "proxy_us_per_req"))
    return {k: v / 100 * us for k, v in p.by_cost}


def findings(profs: list[hotpath.Profile], thr: Scenario | None) -> str:
    """The top three costs of each profiled worker, what the features add, and what
    would cut them."""
    out, named = [], []
    for p in profs:
        top = p.by_cost[:3]
        out.append(f"**Top three costs, {LABEL[p.name]}**: " + "; ".join(
            f"{i}. {k}, {v:.0f} %" for i, (k, v) in enumerate(top, 1)) + ".")
        named += [k for k, _ in top if k not in named]
    by = {p.name: per_request(p, thr) for p in profs}
    base, feat = by.get("gateway"), by.get("features")
    if base and feat:
        more = sorted(((k, v - base.get(k, 0.0)) for k, v in feat.items()),
                      key=lambda kv: -kv[1])[:3]
        out.append("**What the features add** (c1 against c, µs of the worker's CPU per "
                   "request: share of the samples times µs/req in the JSON throughput runs): "
                   + "; ".join(f"{k} +{d:.0f} µs ({base.get(k, 0.0):.0f} → {feat[k]:.0f})"
                               for k, d in more) + ".")
        named += [k for k, _ in more if k not in named]
    fixes = [f"- *{k}*: {FIXES[k]}." for k in named if k in FIXES]
    if fixes:
        out.append("Proposed fixes, for the costs named above:\n\n" + "\n".join(fixes))
    return "\n\n".join(out)


PROFILE_NOTE = ("`py-spy record` (100 samples/s, two recorders at once: a flame graph and raw "
                "stacks) on the worker while wrk drives it as in the JSON throughput runs. "
                "Time in C (syscalls, SQLite, orjson, the GC) is charged to the Python "
                "function that called it; *where the CPU went* classifies each sample by "
                "its whole stack, the other tables by the innermost Python frame.")


def profiles(profs: list[hotpath.Profile], thr: Scenario | None = None) -> str:
    if not profs:
        return "Not taken in this run (`--no-profile`)."
    out = [findings(profs, thr)]
    for p in profs:
        rel = p.svg.relative_to(harness.ROOT)
        out.append(
            f"**{LABEL[p.name]}** under the closed-loop JSON load (wrk, 64 connections): "
            f"{p.samples:,} samples, on CPU {p.busy:.0f} % of the time; flame graph "
            f"`{rel}`, raw stacks `{p.raw.relative_to(harness.ROOT)}` (git-ignored "
            "artefacts of this run).\n\n"
            + table(["where the CPU went (by stack)", "%"],
                    [[k, f"{v:.1f}"] for k, v in p.by_cost]) + "\n\n"
            + table(["self time by package", "%"],
                    [[k, f"{v:.1f}"] for k, v in p.by_package]) + "\n\n"
            + table(["self time by function", "%"],
                    [[f"`{k}`", f"{v:.1f}"] for k, v in p.by_function]) + "\n\n"
            + table(["inclusive time, Tollway functions", "%"],
                    [[f"`{k}`", f"{v:.1f}"] for k, v in p.inclusive]))
    return "\n\n".join(out)


def commands(work: Path) -> str:
    body = (work / "json.json").read_text() + "\n" + (work / "sse.json").read_text()
    litellm_cfg = work / "litellm.yaml"
    extra = ""
    if litellm_cfg.exists():
        text = re.sub(r"master_key: \S+", "master_key: $LITELLM_KEY  # sk- + 32 random hex",
                      litellm_cfg.read_text())
        extra = ("\n\nLiteLLM config (`$W/litellm.yaml`; its environment: "
                 + ", ".join(f"`{k}={v}`" for k, v in litellm_target.ENV.items())
                 + "):\n\n```yaml\n" + text + "```")
    feats = work / "gateway-cached.yaml"
    if feats.exists():
        extra += ("\n\nFeatures gateway config (`$W/gateway-cached.yaml`; "
                  "`gateway-features.yaml` is the same without `cache`):\n\n"
                  "```yaml\n" + feats.read_text().replace(str(work), "$W") + "```")
    return (
        "Every command the run executed, in order (1 s warm-up wrk runs per target left "
        "out); `$W` is the run's scratch directory, `$KEY_FEATURES` and "
        "`$KEY_CACHED` the virtual keys the admin calls returned, and `$PID` the "
        "profiled gateway's process.\n\n"
        "```sh\n" + harness.commands({work: "$W"}) + "\n```\n\n"
        "Request bodies (`$W/json.json`, `$W/sse.json`):\n\n```json\n" + body + "\n```\n\n"
        "Gateway config (`$W/gateway-sim.yaml`):\n\n```yaml\n"
        + (work / "gateway-sim.yaml").read_text() + "```" + extra)


def render(plan: Plan, results: list[Scenario], mem: list[tuple[str, int, int]], work: Path,
           *, litellm: str | None, profiles_: list[hotpath.Profile]) -> str:
    by = {sc.key: sc for sc in results}
    parts = [INTRO.format(conns=plan.connections, dur=plan.duration, warm=plan.warmup,
                          reps=plan.repeats, lreps=plan.lat_repeats, timeout=plan.timeout,
                          litellm=f"litellm {litellm}" if litellm else "not run").rstrip()]
    parts += [background(results),
              "## Targets for one Tollway worker", targets(by, results),
              "## Side by side", side_by_side(by, results)]
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
              "## Memory", memory(results, mem),
              "## Profiles of the hot path",
              PROFILE_NOTE + "\n\n" + profiles(profiles_, by.get("json_throughput")),
              "## Commands", commands(work)]
    return "\n\n".join(parts) + "\n"


def headline(results: list[Scenario]) -> str:
    """One worker's JSON throughput against the floor and LiteLLM, its CPU per request,
    and what it adds at 500 req/s (medians over the repeats)."""
    by = {sc.key: sc for sc in results}
    thr = by["json_throughput"]
    parts = [f"one worker serves {med(thr.ratio('gateway', 'floor', 'rps')):.2f}x the bare "
             "floor proxy's JSON req/s"]
    if "litellm" in thr.targets:
        parts.append(f"{med(thr.ratio('gateway', 'litellm', 'rps')):.0f}x LiteLLM's")
    parts.append(f"at {med(thr.values('gateway', 'proxy_us_per_req')):.0f} µs of CPU a "
                 "request")
    lat = by.get("json_latency_500")
    if lat is not None:
        parts.append(f"and adds {med(lat.added('gateway', 'lat_p50_ms')):.2f} ms p50 at "
                     "500 req/s")
    return ", ".join(parts) + "."
