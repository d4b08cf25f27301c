"""Gateway overhead: requests/s and added latency of one Tollway worker, side by side
with (a) the upstream called directly and (b) the floor, a bare aiohttp pass-through
proxy (bench/floor_proxy.py), for JSON and streamed replies. Rewrites
docs/benchmarks.md with the machine, the exact commands and the figures.

    .venv/bin/python bench/overhead.py           # full run (~9 min) -> docs/benchmarks.md
    .venv/bin/python bench/overhead.py --quick   # smoke run (~1 min) -> bench/results/

Targets are interleaved within each repeat (and their order rotated), so drift on a
shared machine hits all of them alike; ratios are taken within a repeat.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import harness
import overhead_report
from harness import CpuMeter, Server, Servers
from scenario import FULL, QUICK, TARGETS, WITH_RAW, Plan, Run, Scenario

PROMPT = [{"role": "user", "content": "Say hello in five words."}]
DOC = harness.ROOT / "docs" / "benchmarks.md"
RESULTS = harness.BENCH / "results"
CHAT = "/v1/chat/completions"


@dataclass
class Bed:
    """One upstream and the three ways to reach it."""

    name: str
    upstream: Server
    urls: dict[str, str]
    proxies: dict[str, Server]

    def servers(self) -> list[Server]:
        return [self.upstream, *self.proxies.values()]


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
    path.write_text(f"""models:
  sim-model:
    deployments:
      - provider: openai
        model: sim-model
        api_base: http://127.0.0.1:{upstream_port}/v1
        api_key: sim
""")
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
    return Bed(name, upstream, urls, {"floor": floor, "gateway": gw, "raw": raw})


def start_sim_bed(servers: Servers, work: Path, port: int) -> Bed:
    sim = servers.start("simulator", [harness.PY, "-m", "tollway.simulate.server",
                                      "--port", str(port)])
    harness.wait_ready(sim, f"http://127.0.0.1:{port}/_sim/config")
    return start_proxies(servers, work, "sim", sim, port)


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


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure(bed: Bed, target: str, load: Callable[[str], Run]) -> Run:
    pids = {"upstream": bed.upstream.pid}
    if target in bed.proxies:
        pids["proxy"] = bed.proxies[target].pid
    meter = CpuMeter.start(pids)
    r = load(bed.urls[target])
    r |= meter.read(r["loadgen_cpu_s"])
    served = r.get("sent_total", r.get("requests", 0))
    r["proxy_us_per_req"] = 1e6 * r["cpu_s_proxy"] / served if "proxy" in pids and served else 0
    return r


def interleave(bed: Bed, sc: Scenario, repeats: int, load: Callable[[str], Run]) -> Scenario:
    for rep in range(repeats):
        k = rep % len(sc.targets)
        order = sc.targets[k:] + sc.targets[:k]  # rotate: no target always goes first
        for target in order:
            for s in bed.servers():
                s.check_alive()
            r = measure(bed, target, load)
            sc.runs[target].append(r)
            log(f"{sc.key} #{rep + 1} {target:8s} rps={r.get('rps', 0):8.1f} "
                f"p50={r.get('lat_p50_ms', 0):7.2f}ms p99={r.get('lat_p99_ms', 0):7.2f}ms "
                f"proxy={r.get('cpu_proxy', 0):5.1f}% upstream={r['cpu_upstream']:5.1f}% "
                f"other={r['cpu_other']:5.1f}% steal={r['cpu_steal']:4.1f}%")
    return sc


def warm_up(bed: Bed, body: Path) -> None:
    """Open the pools and fill the caches before anything is measured."""
    mark = len(harness.COMMANDS)
    for target in WITH_RAW:
        harness.run_wrk(bed.urls[target], body, 16, 1)
    del harness.COMMANDS[mark:]  # warm-up runs are not part of the report


def scenarios(p: Plan, sim: Bed, canned: Bed, json_body: Path,
              sse_body: Path) -> list[Scenario]:
    def wrk(body: Path) -> Callable[[str], Run]:
        return lambda url: harness.run_wrk(url, body, p.connections, p.duration)

    def rate(body: Path, rps: float, secs: float) -> Callable[[str], Run]:
        return lambda url: harness.run_loadgen(url, body, rps, secs, p.warmup)

    closed = {"connections": p.connections, "duration_s": p.duration}
    out: list[Scenario] = []
    configure_sim(sim, ttft_ms=0, token_ms=0, output_tokens=16)
    out.append(interleave(sim, Scenario(
        "json_throughput", "Non-streaming throughput (closed loop)", "throughput", closed,
        WITH_RAW), p.repeats, wrk(json_body)))
    for rps in p.rates:
        out.append(interleave(sim, Scenario(
            f"json_latency_{rps:g}", f"Non-streaming latency at {rps:g} requests/s", "latency",
            {"rate": rps, "duration_s": p.lat_duration, "warmup_s": p.warmup}),
            p.lat_repeats, rate(json_body, rps, p.lat_duration)))
    configure_sim(sim, ttft_ms=0, token_ms=p.token_ms, output_tokens=p.stream_tokens)
    for rps in p.stream_rates:
        out.append(interleave(sim, Scenario(
            f"stream_latency_{rps:g}", f"Streaming at {rps:g} streams/s", "stream_latency",
            {"rate": rps, "duration_s": p.duration, "warmup_s": p.warmup}),
            p.repeats, rate(sse_body, rps, p.duration)))
    configure_sim(sim, ttft_ms=0, token_ms=0, output_tokens=p.stream_tokens)
    frames = {t: harness.sse_frames(sim.urls[t], sse_body.read_bytes()) for t in TARGETS}
    out.append(interleave(sim, Scenario(
        "stream_throughput", f"Streaming throughput: {p.stream_tokens} tokens, no token delay "
        "(closed loop)", "stream_throughput", closed | {"frames": frames}),
        p.repeats, wrk(sse_body)))
    configure_sim(sim, ttft_ms=0, token_ms=0, output_tokens=16)
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
                    help="first of 8 consecutive loopback ports used (default: %(default)s)")
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


def run_all(plan: Plan, work: Path, base_port: int,
            quick: bool) -> tuple[list[Scenario], str]:
    """Start everything, measure, render the report while the servers still run (their
    peak memory is read from /proc), then stop everything."""
    started = time.monotonic()
    servers = Servers(work)
    try:
        json_body = body_file(work, "json", stream=False)
        sse_body = body_file(work, "sse", stream=True)
        sim = start_sim_bed(servers, work, base_port)
        reply = harness.http("POST", sim.urls["direct"], json_body.read_bytes())
        canned = start_canned_bed(servers, work, base_port + 4, reply)
        warm_up(sim, json_body)
        warm_up(canned, json_body)
        results = scenarios(plan, sim, canned, json_body, sse_body)
        memory = [(s.name, harness.status_kib(s.pid, "VmHWM"), harness.status_kib(s.pid, "VmRSS"))
                  for b in (sim, canned) for s in b.servers()]
        text = overhead_report.render(plan, results, memory, work,
                                      time.monotonic() - started, quick=quick)
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
    busy = [p for p in range(args.base_port, args.base_port + 8) if not harness.port_free(p)]
    if busy:
        sys.exit(f"ports in use: {busy}; pick others with --base-port")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tollway-bench-") as tmp:
        results, text = run_all(plan, Path(tmp), args.base_port, args.quick)
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
