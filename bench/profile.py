"""Profile one gateway worker under load with py-spy and say where its CPU goes.

    .venv/bin/python bench/profile.py                    # JSON replies, near-free upstream
    .venv/bin/python bench/profile.py --stream --upstream sim   # 50-chunk streams

Starts an upstream and `tollway serve`, drives it with wrk (64 connections) and samples
it with `py-spy record --format raw`. Prints self time by package (tollway, uvicorn,
aiohttp, asyncio, ...) and the hottest lines in src/tollway; raw samples go to
bench/results/ (feed them to flamegraph.pl for a picture). py-spy is installed into the
venv if missing. Time in C code (syscalls, orjson, the GC) is charged to the Python line
that called it.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
import load
from harness import CHAT, Server, Servers
from hotpath import FRAME, ensure_py_spy, package
from report import RESULTS


def summarize(raw: Path, duration: float, rate: int) -> str:
    by_pkg: collections.Counter[str] = collections.Counter()
    by_line: collections.Counter[str] = collections.Counter()
    total = 0
    for row in raw.read_text().splitlines():
        stack, _, n = row.rpartition(" ")
        leaf = FRAME.match(stack.split(";")[-1])
        count = int(n)
        total += count
        if leaf is None:
            by_pkg["(native/unknown)"] += count
            continue
        by_pkg[package(leaf["file"])] += count
        if leaf["file"].startswith("tollway/"):
            by_line[f"{leaf['file']}:{leaf['line']} {leaf['func']}"] += count
    busy = 100 * total / (duration * rate)
    out = [f"{total} samples; the gateway was on CPU {busy:.0f}% of the time", "",
           "self time by package:"]
    out += [f"  {100 * c / total:5.1f}%  {k}" for k, c in by_pkg.most_common(12)]
    out += ["", "hottest lines in src/tollway (self time):"]
    out += [f"  {100 * c / total:5.1f}%  {k}" for k, c in by_line.most_common(20)]
    return "\n".join(out)


def start_upstream(servers: Servers, kind: str, port: int, stream: bool) -> Server:
    if kind == "sim":
        sim = harness.start_simulator(servers, port=port)
        harness.sim_config(sim, output_tokens=50 if stream else 16)
        return sim
    if stream:
        sys.exit("--stream needs --upstream sim (the canned upstream only sends JSON)")
    reply = servers.work / "reply.json"
    reply.write_text('{"id":"x","object":"chat.completion","created":0,"model":"sim-model",'
                     '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello '
                     'there, friend."},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,'
                     '"completion_tokens":4,"total_tokens":12}}')
    canned = servers.start("canned", [harness.PY, str(harness.BENCH / "canned_upstream.py"),
                                      "--port", str(port), "--body", str(reply)])
    harness.wait_ready(canned, "/")
    return canned


def profile(args: argparse.Namespace, work: Path, py_spy: str) -> Path:
    with Servers(work) as servers:
        up = start_upstream(servers, args.upstream, args.base_port, args.stream)
        gw = harness.start_gateway(servers, "gateway", {"models": harness.sim_models(up.url)},
                                   port=args.base_port + 1)
        url = gw.url + CHAT
        body = load.body_file(work, "body", stream=args.stream)
        load.run_wrk(url, body, 16, 1)  # warm-up
        wrk = load.start_wrk(url, body, 64, args.seconds + 2)
        time.sleep(1)
        raw = RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.raw"
        subprocess.run([py_spy, "record", "--pid", str(gw.pid), "--duration",
                        f"{args.seconds:g}", "--rate", str(args.rate), "--format", "raw",
                        "--nonblocking", "-o", str(raw)], check=True,
                       timeout=args.seconds + 30, stdout=subprocess.DEVNULL)
        wrk.wait(timeout=30)
        return raw


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", choices=["canned", "sim"], default="canned")
    ap.add_argument("--stream", action="store_true", help="stream 50-chunk replies")
    ap.add_argument("--seconds", type=float, default=10.0, help="sampling time")
    ap.add_argument("--rate", type=int, default=200, help="samples per second")
    ap.add_argument("--base-port", type=int, default=18111)
    args = ap.parse_args()
    py_spy = ensure_py_spy()
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tollway-profile-") as tmp:
        raw = profile(args, Path(tmp), py_spy)
    text = summarize(raw, args.seconds, args.rate)
    raw.with_suffix(".txt").write_text(text + "\n")
    print(text)
    print(f"\nraw samples: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
