"""Gateway overhead: requests/s, added latency, streaming and memory of one Tollway
worker, side by side with (a) the upstream called directly, (b) the floor, a bare
aiohttp pass-through proxy (bench/floor_proxy.py), Tollway with keys, budgets, rate
limits, the ledger and the exact cache on, (d) LiteLLM's proxy (bench/litellm_target.py,
installed into bench/.litellm-venv on first use) and the raw floor, for JSON and
streamed replies; then py-spy profiles of the worker.

    .venv/bin/python bench/overhead.py           # ~6 min -> docs/benchmarks/overhead.md
    .venv/bin/python bench/overhead.py --quick   # ~2.5 min -> bench/results/

Targets are interleaved within each repeat (and their order rotated), so drift on a
shared machine hits all of them alike; ratios are taken within a repeat.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cli
import features_target
import harness
import hotpath
import litellm_target
import load
import overhead_report
import report
from harness import CHAT, Server, Servers
from load import Auth
from procfs import CpuSnapshot, reset_peak_rss, status_kib
from scenario import FULL, JSON, QUICK, SIM, WITH_RAW, Plan, Run, Scenario

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


def start_proxies(servers: Servers, name: str, upstream: Server, upstream_port: int) -> Bed:
    """In front of the upstream: the floor on upstream_port+1, the gateway on +2 and the
    raw floor on +3."""
    ports = {"floor": upstream_port + 1, "gateway": upstream_port + 2, "raw": upstream_port + 3}
    floor = servers.start(f"floor-{name}", [harness.PY, str(harness.BENCH / "floor_proxy.py"),
                                            "--port", str(ports["floor"]), "--upstream",
                                            upstream.url])
    # The alias is the upstream's model name, so all three targets get the same body.
    gw = harness.start_gateway(servers, f"gateway-{name}",
                               {"models": harness.sim_models(upstream.url)},
                               port=ports["gateway"], ready=False)
    raw = servers.start(f"raw-{name}", [harness.PY, str(harness.BENCH / "raw_proxy.py"),
                                        "--port", str(ports["raw"]), "--upstream-port",
                                        str(upstream_port)])
    harness.wait_ready(gw)
    harness.wait_ready(floor, "/v1/models")  # forwarded to the upstream
    harness.wait_listening(raw)
    proxies = {"floor": floor, "gateway": gw, "raw": raw}
    urls = {"direct": upstream.url + CHAT, **{k: s.url + CHAT for k, s in proxies.items()}}
    return Bed(name, upstream, urls, proxies, port=upstream_port)


def start_sim_bed(servers: Servers, port: int, litellm: bool) -> Bed:
    """The simulator with every target in front of it; the features gateways on port+9
    and +10, LiteLLM on +8."""
    sim = harness.start_simulator(servers, port=port)
    bed = start_proxies(servers, "sim", sim, port)
    for name, offset, cache in (("features", 9, False), ("cached", 10, True)):
        gw, bed.auth[name] = features_target.start(servers, sim.url, name, port + offset,
                                                    cache=cache)
        bed.proxies[name], bed.urls[name] = gw, gw.url + CHAT
    if litellm:
        gw, bed.auth["litellm"] = litellm_target.start(servers, sim.url, port + 8)
        bed.proxies["litellm"], bed.urls["litellm"] = gw, gw.url + CHAT
    return bed


def start_canned_bed(servers: Servers, port: int, reply: bytes) -> Bed:
    reply_file = servers.work / "canned-reply.json"
    reply_file.write_bytes(reply)
    canned = servers.start("canned", [harness.PY, str(harness.BENCH / "canned_upstream.py"),
                                      "--port", str(port), "--body", str(reply_file)])
    harness.wait_ready(canned, "/")  # it answers any request
    return start_proxies(servers, "canned", canned, port)


# -- running -----------------------------------------------------------------------------------


def measure(bed: Bed, target: str, drive: Load) -> Run:
    pids = {"upstream": [bed.upstream.pid]}
    if target in bed.proxies:
        pids["proxy"] = [bed.proxies[target].pid]
    before = CpuSnapshot.take(pids)
    r = drive(bed.urls[target], bed.auth.get(target))
    r |= CpuSnapshot.take(pids).usage_since(before)
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
    servers.stop(bed.proxies["litellm"], kill=True)
    mark = len(harness.COMMANDS)
    bed.proxies["litellm"], bed.auth["litellm"] = litellm_target.start(
        servers, bed.upstream.url, bed.port + 8)
    load.run_wrk(bed.urls["litellm"], servers.work / "json.json", 4, 1,
                 bed.auth["litellm"])  # warm
    del harness.COMMANDS[mark:]  # the same commands as at the start


def interleave(bed: Bed, sc: Scenario, repeats: int, drive: Load,
               servers: Servers | None = None) -> Scenario:
    """Every target once per repeat, in a rotated order. LiteLLM, when it cannot keep up
    with an open-loop rate, is measured once (its failures are the finding), restarted,
    and left out of the scenario's later repeats, so its runs stay bounded in time."""
    for s in bed.proxies.values():
        reset_peak_rss(s.pid)
    skip: set[str] = set()
    for rep in range(repeats):
        k = rep % len(sc.targets)
        order = sc.targets[k:] + sc.targets[:k]  # rotate: no target always goes first
        for target in order:
            if target in skip:
                continue
            for s in bed.servers():
                s.check_alive()
            r = measure(bed, target, drive)
            r["repeat"] = rep
            if target == "litellm" and "sent" not in r:  # closed loop: let it finish
                r["quiesce_s"] = litellm_target.quiesce(bed.proxies[target], 8.0)
            elif target == "litellm":
                r["quiesce_s"] = litellm_target.quiesce(bed.proxies[target], 3.0)
                if overloaded(r) or r["quiesce_s"] >= 3.0:
                    sc.peak_rss_kib["litellm"] = status_kib(
                        bed.proxies[target].pid, "VmHWM")
                    skip.add(target)
                    sc.notes.append(f"LiteLLM overloaded in repeat {rep + 1} "
                                    f"({r.get('failed', 0):,} of {r.get('sent', 0):,} failed)"
                                    "; restarted and not run again in this scenario")
                    if servers is not None:
                        restart_litellm(bed, servers)
            sc.runs[target].append(r)
            cli.log(f"{sc.key} #{rep + 1} {target:8s} rps={r.get('rps', 0):8.1f} "
                    f"p50={r.get('lat_p50_ms', 0):7.2f}ms p99={r.get('lat_p99_ms', 0):7.2f}ms "
                    f"failed={r.get('failed', r.get('errors', 0))} "
                    f"proxy={r.get('cpu_proxy', 0):5.1f}% upstream={r['cpu_upstream']:5.1f}% "
                    f"other={r['cpu_other']:5.1f}% steal={r['cpu_steal']:4.1f}%")
    for t in sc.targets:
        if t in bed.proxies and t not in sc.peak_rss_kib:
            sc.peak_rss_kib[t] = status_kib(bed.proxies[t].pid, "VmHWM")
    return sc


def warm_up(bed: Bed, body: Path) -> None:
    """Open the pools and fill the caches before anything is measured."""
    mark = len(harness.COMMANDS)
    for target in bed.urls:
        load.run_wrk(bed.urls[target], body, 16, 1, bed.auth.get(target))
    del harness.COMMANDS[mark:]  # warm-up runs are not part of the report


def scenarios(p: Plan, sim: Bed, canned: Bed | None, json_body: Path, sse_body: Path,
              servers: Servers) -> list[Scenario]:
    def wrk(body: Path) -> Load:
        return lambda url, auth: load.run_wrk(url, body, p.connections, p.duration, auth)

    def rate(body: Path, rps: float, secs: float) -> Load:
        return lambda url, auth: load.run_loadgen(url, body, rps, secs, p.warmup, p.timeout,
                                                  auth)

    closed = {"connections": p.connections, "duration_s": p.duration}
    out: list[Scenario] = []
    harness.sim_config(sim.upstream, ttft_ms=0, token_ms=0, output_tokens=16)
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
    harness.sim_config(sim.upstream, ttft_ms=0, token_ms=p.token_ms, output_tokens=p.stream_tokens)
    for rps in p.stream_rates:
        out.append(interleave(sim, Scenario(
            f"stream_latency_{rps:g}", f"Streaming at {rps:g} streams/s", "stream_latency",
            {"rate": rps, "duration_s": p.lat_duration, "warmup_s": p.warmup},
            sim.only(SIM)), p.repeats, rate(sse_body, rps, p.lat_duration), servers))
    harness.sim_config(sim.upstream, ttft_ms=0, token_ms=0, output_tokens=p.stream_tokens)
    targets = sim.only(SIM)
    replies = {t: load.sse_frames(sim.urls[t], sse_body, sim.auth.get(t)) for t in targets}
    frames = {t: n for t, (n, _) in replies.items()}
    frame_bytes = {t: size / n for t, (n, size) in replies.items()}
    out.append(interleave(sim, Scenario(
        "stream_throughput", f"Streaming throughput: {p.stream_tokens} tokens, no token delay "
        "(closed loop)", "stream_throughput",
        closed | {"frames": frames, "frame_bytes": frame_bytes}, targets),
        p.repeats, wrk(sse_body)))
    harness.sim_config(sim.upstream, ttft_ms=0, token_ms=0, output_tokens=16)
    if canned is not None:
        out.append(interleave(canned, Scenario(
            "near_free", "Non-streaming throughput, near-free upstream (closed loop)",
            "throughput", closed, WITH_RAW), p.repeats, wrk(json_body)))
    return out


# -- entry -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = cli.parser(__doc__)
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
    litellm = None if args.no_litellm else litellm_target.ensure_venv()
    with Servers(work) as servers:
        json_body = load.body_file(work, "json", stream=False)
        sse_body = load.body_file(work, "sse", stream=True)
        sim = start_sim_bed(servers, args.base_port, litellm is not None)
        reply = harness.http("POST", sim.urls["direct"], json_body.read_bytes())
        canned = (start_canned_bed(servers, args.base_port + 4, reply)
                  if args.near_free else None)
        warm_up(sim, json_body)
        if canned is not None:
            warm_up(canned, json_body)
        results = scenarios(plan, sim, canned, json_body, sse_body, servers)
        profiles = [] if args.no_profile else [
            hotpath.record(sim.proxies[t], sim.urls[t], json_body, sim.auth.get(t), t,
                           report.RESULTS, 3.0 if args.quick else 6.0)
            for t in ("gateway", "features")]
        memory = [(s.name, status_kib(s.pid, "VmHWM"), status_kib(s.pid, "VmRSS"))
                  for b in (sim, canned) if b is not None for s in b.servers()]
        text = overhead_report.render(plan, results, memory, work, litellm=litellm,
                                      profiles_=profiles)
    return results, text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    busy = [p for p in range(args.base_port, args.base_port + 11) if not harness.port_free(p)]
    if busy:
        sys.exit(f"ports in use: {busy}; pick others with --base-port")
    with tempfile.TemporaryDirectory(prefix="tollway-bench-") as tmp:
        results, text = run_all(plan, Path(tmp), args)
    report.write(args, title="Gateway overhead", headline=overhead_report.headline(results),
                 body=text, libraries=overhead_report.LIBRARIES,
                 extra=[("load generator",
                         f"{report.wrk_version()}; bench/loadgen.py (aiohttp + uvloop)")])
    raw = report.save_raw({"plan": asdict(plan), "results": [asdict(s) for s in results]})
    cli.log(f"and {raw.relative_to(harness.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
