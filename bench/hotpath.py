"""Profile a running gateway under the closed-loop JSON load with py-spy: a flame graph
(SVG) and raw samples under bench/results/, and where the CPU went, for the report.

Time in C code (syscalls, orjson, the GC) is charged to the Python line that called it.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness
import load
from harness import Server
from load import Auth

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+):(?P<line>\d+)\)$")
RATE = 100  # samples/s per recorder: two run at once on a 2-core machine


def ensure_py_spy() -> str:
    exe = Path(harness.PY).parent / "py-spy"
    if not exe.exists() and shutil.which("py-spy") is None:
        subprocess.run([harness.PY, "-m", "pip", "install", "-q", "py-spy"], check=True)
    return str(exe) if exe.exists() else "py-spy"


def package(file: str) -> str:
    """`aiohttp/client.py` -> aiohttp; site-packages and stdlib paths alike."""
    parts = file.split("site-packages/")[-1].split("/")
    return parts[0].removesuffix(".py") if parts[0] else "?"


@dataclass
class Profile:
    name: str
    svg: Path
    raw: Path
    samples: int = 0
    busy: float = 0.0  # % of the sampled time the process was on CPU
    by_package: list[tuple[str, float]] = field(default_factory=list)  # self time, %
    by_function: list[tuple[str, float]] = field(default_factory=list)  # self time, %
    inclusive: list[tuple[str, float]] = field(default_factory=list)  # tollway, total %
    by_cost: list[tuple[str, float]] = field(default_factory=list)  # what the CPU did, %


# Where a sample's CPU went, by its stack: the first rule that matches wins.
LEDGER = "ledger write (SQLite transaction on the store's thread)"
CLIENT = "upstream HTTP client (aiohttp: pool, request, response parsing)"
SERVER = "HTTP server (uvicorn + httptools: parsing, ASGI messages, writing)"
LOOP = "event loop, tasks, callbacks (asyncio on uvloop)"


def cost(frames: list[re.Match[str]]) -> str:
    if any("Ledger" in m["func"] for m in frames):
        return LEDGER
    leaf = package(frames[-1]["file"])
    if leaf == "aiohttp":
        return CLIENT
    if leaf in ("uvicorn", "httptools", "h11"):
        return SERVER
    if leaf in ("asyncio", "uvloop", "concurrent", "threading", "selectors"):
        return LOOP
    if leaf == "tollway":  # our own code, by subpackage (server, policy, store, ...)
        part = frames[-1]["file"].split("/")[1].removesuffix(".py")
        return f"Tollway's own code: {part}"
    return f"other: {leaf}"


def summarize(p: Profile, seconds: float) -> Profile:
    self_pkg: collections.Counter[str] = collections.Counter()
    self_fn: collections.Counter[str] = collections.Counter()
    costs: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for row in p.raw.read_text().splitlines():
        stack, _, n = row.rpartition(" ")
        frames = [m for m in (FRAME.match(f) for f in stack.split(";")) if m]
        count = int(n)
        total += count
        if not frames:
            self_pkg["(native/unknown)"] += count
            costs["(native/unknown)"] += count
            continue
        costs[cost(frames)] += count
        leaf = frames[-1]
        self_pkg[package(leaf["file"])] += count
        self_fn[f"{leaf['func']} ({leaf['file']})"] += count
        for name in {f"{m['func']} ({m['file']})" for m in frames  # cli.py: all of it
                     if m["file"].startswith("tollway/") and m["file"] != "tollway/cli.py"}:
            incl[name] += count
    if total:
        def pct(c: collections.Counter[str], n: int) -> list[tuple[str, float]]:
            return [(k, 100 * v / total) for k, v in c.most_common(n)]

        p.samples, p.busy = total, 100 * total / (seconds * RATE)
        p.by_package, p.by_function, p.inclusive = (pct(self_pkg, 8), pct(self_fn, 10),
                                                    pct(incl, 12))
        p.by_cost = pct(costs, 8)
    return p


def record(server: Server, url: str, body: Path, auth: Auth | None, name: str,
           out_dir: Path, seconds: float) -> Profile:
    """wrk at 64 connections on `url` while two py-spy recorders sample `server`: one
    writes the flame graph, the other raw stacks to count."""
    py_spy = ensure_py_spy()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prof = Profile(name, out_dir / f"profile-{name}-{stamp}.svg",
                   out_dir / f"profile-{name}-{stamp}.raw")
    wrk = load.start_wrk(url, body, 64, seconds + 3, auth)
    try:
        time.sleep(1)
        spies = []
        for fmt, path in (("flamegraph", prof.svg), ("raw", prof.raw)):
            cmd = [py_spy, "record", "--pid", str(server.pid), "--duration", f"{seconds:g}",
                   "--rate", str(RATE), "--format", fmt, "--nonblocking", "-o", str(path)]
            harness.record([c if c != str(server.pid) else "$PID" for c in cmd])
            spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        for spy in spies:
            spy.wait(timeout=seconds + 30)
    finally:
        wrk.wait(timeout=seconds + 30)
    return summarize(prof, seconds)
