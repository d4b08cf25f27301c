"""Gateway overhead: requests/s, added latency, streaming and memory of one Tollway
worker, side by side with (a) the upstream called directly, (b) the floor, a bare
aiohttp pass-through proxy (bench/floor_proxy.py), Tollway with keys, budgets, rate
limits, the ledger and the exact cache on, (d) LiteLLM's proxy (bench/litellm_target.py,
installed into bench/.litellm-venv on first use) and the raw floor, for JSON and
streamed replies; then py-spy profiles of the worker. Rewrites docs/benchmarks.md with
the machine, the exact commands and the figures.

    .venv/bin/python bench/overhead.py           # full run (~6 min) -> docs/benchmarks.md
    .venv/bin/python bench/overhead.py --quick   # smoke run (~2.5 min) -> bench/results/

Targets are interleaved within each repeat (and their order rotated), so drift on a
shared machine hits all of them alike; ratios are taken within a repeat.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import features_target
import harness
import hotpath
import litellm_target
import overhead_report
from harness import Auth, CpuMeter, Server, Servers
from scenario import FULL, JSON, QUICK, SIM, WITH_RAW, Plan, Run, Scenario

PROMPT = [{"role": "user", "content": "Say hello in five words."}]
DOC = harness.ROOT / "docs" / "benchmarks.md"
RESULTS = harness.BENCH / "results"
CHAT = "/v1/chat/completions"


Load = Callable[[str, Auth | None], Run]  # (url, bearer key) -> what one run measured


@dataclass
class Bed:
    """One upstream and the ways to reach it."""

    name: str
    upstream: Server
    urls: dict[str, str]
    proxies: dict[str, Server]
    auth: dict[str, Auth] = field(default_factory=dict)
    port: int = 0  # the upstream's; the targets' ports are offsets from it

    def servers(self) -> list[Server]:
        return [self.upstream, *self.proxies.values()]

    def only(self, targets: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(t for t in targets if t in self.urls)


# -- setting up ------------------------------------------------------------------------------


def body_file(work: Path, name: str, *, stream: bool) -> Path:
    body: dict[str, Any] = {"model": "sim-model", "messages": PROMPT, "max_tokens": 64}
    if stream:
        body["stream"] = True
    path = work / f"{name}.json"
    path.write_bytes(json.dumps(body, separators=(",", ":")).encode())
    return path


def gateway_config(work: Path, name: str, upstream_port: int) -> Path:
    # The alias is the upstream's model name, so all three targets get the same body.
    path = work / f"gateway-{name}.yaml"
    path.write_text(harness.sim_models_yaml(upstream_port))
    return path


def start_proxies(servers: Servers, work: Path, name: str, upstream: Server,
                  upstream_port: int) -> Bed:
    """In front of the upstream: the floor on upstream_port+1, the gateway on +2 and the
    raw floor on +3."""
    base = f"http://127.0.0.1:{upstream_port}"
    ports = {"floor": upstream_port + 1, "gateway": upstream_port + 2, "raw": upstream_port + 3}
    url = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    floor = servers.start(f"floor-{name}", [harness.PY, str(harness.BENCH / "floor_proxy.py"),
                                            "--port", str(ports["floor"]), "--upstream", base])
    tollway = str(Path(harness.PY).parent / "tollway")
    gw = servers.start(f"gateway-{name}", [tollway, "serve", "--port", str(ports["gateway"]),
                                           "--config",
                                           str(gateway_config(work, name, upstream_port))])
    raw = servers.start(f"raw-{name}", [harness.PY, str(harness.BENCH / "raw_proxy.py"),
                                        "--port", str(ports["raw"]), "--upstream-port",
                                        str(upstream_port)])
    harness.wait_ready(gw, url["gateway"] + "/health")
    harness.wait_ready(floor, url["floor"] + "/v1/models")  # forwarded to the upstream
    harness.wait_port(raw, ports["raw"])
    urls = {"direct": base + CHAT, **{k: u + CHAT for k, u in url.items()}}
    return Bed(name, upstream, urls, {"floor": floor, "gateway": gw, "raw": raw},
               port=upstream_port)


def start_sim_bed(servers: Servers, work: Path, port: int, litellm: bool) -> Bed:
    """The simulator with every target in front of it; the features gateways on port+9
    and +10, LiteLLM on +8."""
    sim = servers.start("simulator", [harness.PY, "-m", "tollway.simulate.server",
                                      "--port", str(port)])
    harness.wait_ready(sim, f"http://127.0.0.1:{port}/_sim/config")
    bed = start_proxies(servers, work, "sim", sim, port)
    for name, offset, cache in (("features", 9, False), ("cached", 10, True)):
        gw, bed.auth[name] = features_target.start(servers, work, name, port, port + offset,
                                                    cache=cache)
        bed.proxies[name], bed.urls[name] = gw, f"http://127.0.0.1:{port + offset}{CHAT}"
    if litellm:
        gw, bed.auth["litellm"] = litellm_target.start(servers, work, port, port + 8)
        bed.proxies["litellm"], bed.urls["litellm"] = gw, f"http://127.0.0.1:{port + 8}{CHAT}"
    return bed


def start_canned_bed(servers: Servers, work: Path, port: int, reply: bytes) -> Bed:
    reply_file = work / "canned-reply.json"
    reply_file.write_bytes(reply)
    canned = servers.start("canned", [harness.PY, str(harness.BENCH / "canned_upstream.py"),
                                      "--port", str(port), "--body", str(reply_file)])
    harness.wait_ready(canned, f"http://127.0.0.1:{port}/")  # it answers any request
    return start_proxies(servers, work, "canned", canned, port)


def configure_sim(bed: Bed, **cfg: float) -> None:
    url = bed.urls["direct"].replace(CHAT, "/_sim/config")
    # Sent with urllib; this is the equivalent command.
    harness.COMMANDS.append(f"curl -X PUT {url} -H 'Content-Type: application/json' "
                            f"-d '{json.dumps(cfg)}'")
    harness.http("PUT", url, json.dumps(cfg).encode())


# -- running -----------------------------------------------------------------------------------


T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:4.0f} s] {msg}", file=sys.stderr, flush=True)


def measure(bed: Bed, target: str, load: Load) -> Run:
    pids = {"upstream": bed.upstream.pid}
    if target in bed.proxies:
        pids["proxy"] = bed.proxies[target].pid
    meter = CpuMeter.start(pids)
    r = load(bed.urls[target], bed.auth.get(target))
    r |= meter.read(r["loadgen_cpu_s"])
    served = r.get("sent_total", r.get("requests", 0))
    # Nothing served (a proxy that finished no stream in the run): no per-request cost.
    r["proxy_us_per_req"] = (1e6 * r["cpu_s_proxy"] / served if served else math.nan
                             ) if "proxy" in pids else 0
    return r


def overloaded(r: Run) -> bool:
    """An open-loop run the target could not keep up with: requests failed or timed out."""
    return "sent" in r and r["failed"] > 0.01 * r["sent"]


def restart_litellm(bed: Bed, servers: Servers) -> None:
    """Drop an overloaded LiteLLM's backlog (it works off requests the load generator
    gave up on for a minute or more) by starting it afresh."""
    old = bed.proxies["litellm"]
    old.proc.kill()
    old.proc.wait(timeout=10)
    servers.started.remove(old)
    mark = len(harness.COMMANDS)
    bed.proxies["litellm"], bed.auth["litellm"] = litellm_target.start(
        servers, servers.log_dir, bed.port, bed.port + 8)
    harness.run_wrk(bed.urls["litellm"], servers.log_dir / "json.json", 4, 1,
                    bed.auth["litellm"])  # warm
    del harness.COMMANDS[mark:]  # the same commands as at the start


def interleave(bed: Bed, sc: Scenario, repeats: int, load: Load,
               servers: Servers | None = None) -> Scenario:
    """Every target once per repeat, in a rotated order. LiteLLM, when it cannot keep up
    with an open-loop rate, is measured once (its failures are the finding), restarted,
    and left out of the scenario's later repeats, so its runs stay bounded in time."""
    for s in bed.proxies.values():
        harness.reset_peak_rss(s.pid)
    skip: set[str] = set()
    for rep in range(repeats):
        k = rep % len(sc.targets)
        order = sc.targets[k:] + sc.targets[:k]  # rotate: no target always goes first
        for target in order:
            if target in skip:
                continue
            for s in bed.servers():
                s.check_alive()
            r = measure(bed, target, load)
            r["repeat"] = rep
            if target == "litellm" and "sent" not in r:  # closed loop: let it finish
                r["quiesce_s"] = litellm_target.quiesce(bed.proxies[target], 8.0)
            elif target == "litellm":
                r["quiesce_s"] = litellm_target.quiesce(bed.proxies[target], 3.0)
                if overloaded(r) or r["quiesce_s"] >= 3.0:
                    sc.peak_rss_kib["litellm"] = harness.status_kib(
                        bed.proxies[target].pid, "VmHWM")
                    skip.add(target)
                    sc.notes.append(f"LiteLLM overloaded in repeat {rep + 1} "
                                    f"({r.get('failed', 0):,} of {r.get('sent', 0):,} failed)"
                                    "; restarted and not run again in this scenario")
                    if servers is not None:
                        restart_litellm(bed, servers)
            sc.runs[target].append(r)
            log(f"{sc.key} #{rep + 1} {target:8s} rps={r.get('rps', 0):8.1f} "
                f"p50={r.get('lat_p50_ms', 0):7.2f}ms p99={r.get('lat_p99_ms', 0):7.2f}ms "
                f"failed={r.get('failed', r.get('errors', 0))} "
                f"proxy={r.get('cpu_proxy', 0):5.1f}% upstream={r['cpu_upstream']:5.1f}% "
                f"other={r['cpu_other']:5.1f}% steal={r['cpu_steal']:4.1f}%")
    for t in sc.targets:
        if t in bed.proxies and t not in sc.peak_rss_kib:
            sc.peak_rss_kib[t] = harness.status_kib(bed.proxies[t].pid, "VmHWM")
    return sc


def warm_up(bed: Bed, body: Path) -> None:
    """Open the pools and fill the caches before anything is measured."""
    mark = len(harness.COMMANDS)
    for target in bed.urls:
        harness.run_wrk(bed.urls[target], body, 16, 1, bed.auth.get(target))
    del harness.COMMANDS[mark:]  # warm-up runs are not part of the report


def scenarios(p: Plan, sim: Bed, canned: Bed | None, json_body: Path, sse_body: Path,
              servers: Servers) -> list[Scenario]:
    def wrk(body: Path) -> Load:
        return lambda url, auth: harness.run_wrk(url, body, p.connections, p.duration, auth)

    def rate(body: Path, rps: float, secs: float) -> Load:
        return lambda url, auth: harness.run_loadgen(url, body, rps, secs, p.warmup,
                                                     p.timeout, auth)

    closed = {"connections": p.connections, "duration_s": p.duration}
    out: list[Scenario] = []
    configure_sim(sim, ttft_ms=0, token_ms=0, output_tokens=16)
    out.append(interleave(sim, Scenario(
        "json_throughput", "Non-streaming throughput (closed loop)", "throughput", closed,
        sim.only(JSON)), p.repeats, wrk(json_body)))
    saturated = ""  # LiteLLM's result at a lower rate where most requests failed
    for rps in p.rates:
        sc = Scenario(f"json_latency_{rps:g}", f"Non-streaming latency at {rps:g} requests/s",
                      "latency", {"rate": rps, "duration_s": p.lat_duration,
                                  "warmup_s": p.warmup},
                      tuple(t for t in sim.only(SIM) if not (saturated and t == "litellm")))
        if saturated:  # a higher rate can only fail more: spare the run and the restart
            sc.notes.append(f"LiteLLM not run at {rps:g} req/s: {saturated}")
        out.append(interleave(sim, sc, p.lat_repeats, rate(json_body, rps, p.lat_duration),
                              servers))
        runs = sc.runs.get("litellm", [])
        if not saturated and any(r["failed"] > 0.5 * r["sent"] for r in runs):
            saturated = (f"at {rps:g} req/s {sum(r['failed'] for r in runs):,} of "
                         f"{sum(r['sent'] for r in runs):,} requests already failed")
    configure_sim(sim, ttft_ms=0, token_ms=p.token_ms, output_tokens=p.stream_tokens)
    for rps in p.stream_rates:
        out.append(interleave(sim, Scenario(
            f"stream_latency_{rps:g}", f"Streaming at {rps:g} streams/s", "stream_latency",
            {"rate": rps, "duration_s": p.lat_duration, "warmup_s": p.warmup},
            sim.only(SIM)), p.repeats, rate(sse_body, rps, p.lat_duration), servers))
    configure_sim(sim, ttft_ms=0, token_ms=0, output_tokens=p.stream_tokens)
    targets = sim.only(SIM)
    replies = {t: harness.sse_frames(sim.urls[t], sse_body.read_bytes(), sim.auth.get(t))
               for t in targets}
    frames = {t: n for t, (n, _) in replies.items()}
    frame_bytes = {t: size / n for t, (n, size) in replies.items()}
    out.append(interleave(sim, Scenario(
        "stream_throughput", f"Streaming throughput: {p.stream_tokens} tokens, no token delay "
        "(closed loop)", "stream_throughput",
        closed | {"frames": frames, "frame_bytes": frame_bytes}, targets),
        p.repeats, wrk(sse_body)))
    configure_sim(sim, ttft_ms=0, token_ms=0, output_tokens=16)
    if canned is not None:
        out.append(interleave(canned, Scenario(
            "near_free", "Non-streaming throughput, near-free upstream (closed loop)",
            "throughput", closed, WITH_RAW), p.repeats, wrk(json_body)))
    return out


# -- entry -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short repeat (smoke test)")
    ap.add_argument("--repeats", type=int, help="override the number of repeats")
    ap.add_argument("--duration", type=float, help="override measured seconds per run")
    ap.add_argument("--base-port", type=int, default=18101,
                    help="first of 11 consecutive loopback ports used (default: %(default)s)")
    ap.add_argument("--no-litellm", action="store_true",
                    help="leave LiteLLM out (no bench/.litellm-venv needed)")
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    ap.add_argument("--near-free", action="store_true",
                    help="also measure JSON throughput with a near-free upstream "
                    "(bench/canned_upstream.py; ~1 min more): does the simulator limit them?")
    ap.add_argument("--out", type=Path, help="markdown report (default: docs/benchmarks.md, "
                    "or bench/results/overhead-quick.md with --quick)")
    return ap.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    if args.repeats:
        plan = replace(plan, repeats=args.repeats, lat_repeats=args.repeats)
    if args.duration:
        plan = replace(plan, duration=args.duration, lat_duration=args.duration)
    return plan


def run_all(plan: Plan, work: Path, args: argparse.Namespace) -> tuple[list[Scenario], str]:
    """Start everything, measure, profile, render the report while the servers still run
    (their peak memory is read from /proc), then stop everything."""
    started = time.monotonic()
    litellm = None if args.no_litellm else litellm_target.ensure_venv()
    servers = Servers(work)
    try:
        json_body = body_file(work, "json", stream=False)
        sse_body = body_file(work, "sse", stream=True)
        sim = start_sim_bed(servers, work, args.base_port, litellm is not None)
        reply = harness.http("POST", sim.urls["direct"], json_body.read_bytes())
        canned = (start_canned_bed(servers, work, args.base_port + 4, reply)
                  if args.near_free else None)
        warm_up(sim, json_body)
        if canned is not None:
            warm_up(canned, json_body)
        results = scenarios(plan, sim, canned, json_body, sse_body, servers)
        profiles = [] if args.no_profile else [
            hotpath.record(sim.proxies[t], sim.urls[t], json_body, sim.auth.get(t), t,
                           RESULTS, 3.0 if args.quick else 6.0)
            for t in ("gateway", "features")]
        memory = [(s.name, harness.status_kib(s.pid, "VmHWM"), harness.status_kib(s.pid, "VmRSS"))
                  for b in (sim, canned) if b is not None for s in b.servers()]
        text = overhead_report.render(plan, results, memory, work, time.monotonic() - started,
                                      quick=args.quick, litellm=litellm, profiles_=profiles)
    finally:
        servers.stop_all()
    return results, text


def kept_sections(path: Path) -> str:
    """The other benchmarks' sections of the doc (between `<!-- NAME:begin -->` and
    `<!-- NAME:end -->`): this one rewrites the rest, they stay as they were."""
    if not path.exists():
        return ""
    blocks = re.finditer(r"<!-- ([a-z]+):begin -->.*?<!-- \1:end -->", path.read_text(),
                         flags=re.S)
    return "".join("\n" + b.group(0) + "\n" for b in blocks)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    out = args.out or (RESULTS / "overhead-quick.md" if args.quick else DOC)
    busy = [p for p in range(args.base_port, args.base_port + 11) if not harness.port_free(p)]
    if busy:
        sys.exit(f"ports in use: {busy}; pick others with --base-port")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tollway-bench-") as tmp:
        results, text = run_all(plan, Path(tmp), args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + kept_sections(out))
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / f"overhead-{time.strftime('%Y%m%d-%H%M%S')}.json"
    raw.write_text(json.dumps({"plan": asdict(plan), "results": [asdict(s) for s in results]},
                              indent=1))
    log(f"wrote {out} and {raw} in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
