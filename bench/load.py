"""Load on a target: wrk closed loop, bench/loadgen.py open loop at a constant rate, and
the request bodies they send."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness

PROMPT = [{"role": "user", "content": "Say hello in five words."}]
POST_LUA = harness.BENCH / "post.lua"


@dataclass(frozen=True)
class Auth:
    """A bearer key for the load generators, passed in $BENCH_AUTH (post.lua and
    loadgen.py read it, so it stays out of argv); the report shows `shown` (e.g.
    `$KEY`) in its place."""

    secret: str
    shown: str


def _env(auth: Auth | None) -> tuple[dict[str, str], dict[str, str]]:
    """(for the process, for the report)"""
    return ({"BENCH_AUTH": auth.secret}, {"BENCH_AUTH": auth.shown}) if auth else ({}, {})


def body_file(work: Path, name: str, *, stream: bool) -> Path:
    """The chat request every throughput benchmark sends (`$W/NAME.json`)."""
    body: dict[str, Any] = {"model": "sim-model", "messages": PROMPT, "max_tokens": 64}
    if stream:
        body["stream"] = True
    path = work / f"{name}.json"
    path.write_bytes(json.dumps(body, separators=(",", ":")).encode())
    return path


def wrk_argv(url: str, connections: int, duration: float) -> list[str]:
    """One wrk thread is plenty here and leaves the cores to the servers."""
    return ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s",
            "-s", str(POST_LUA), url]


def run_wrk(url: str, body: Path, connections: int, duration: float,
            auth: Auth | None = None) -> dict[str, Any]:
    """Closed loop: `connections` keep-alive connections, each sends as soon as it has
    its answer. Returns wrk's figures, with rps, errors and p50/p99 in ms."""
    argv = wrk_argv(url, connections, duration)
    secret, shown = _env(auth)
    env = {"BENCH_BODY": str(body)}
    harness.record(argv, env | shown)
    out = subprocess.run(argv, env={**os.environ, **env, **secret}, capture_output=True,
                         text=True, timeout=duration + 30, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    r: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    r["lat_p50_ms"], r["lat_p99_ms"] = r["p50_us"] / 1000, r["p99_us"] / 1000
    return r


def start_wrk(url: str, body: Path, connections: int, duration: float,
              auth: Auth | None = None) -> subprocess.Popen[bytes]:
    """wrk in the background (load while something else samples), output discarded."""
    argv = wrk_argv(url, connections, duration)
    secret, shown = _env(auth)
    harness.record(argv, {"BENCH_BODY": str(body)} | shown)
    return subprocess.Popen(argv, env={**os.environ, "BENCH_BODY": str(body), **secret},
                            stdout=subprocess.DEVNULL)


def run_loadgen(url: str, body: Path, rate: float, duration: float, warmup: float,
                timeout: float = 15.0, auth: Auth | None = None) -> dict[str, Any]:
    """Open loop at a constant rate, latency from the intended send time."""
    argv = [harness.PY, str(harness.BENCH / "loadgen.py"), url, "--body", str(body),
            "--rate", f"{rate:g}", "--duration", f"{duration:g}", "--warmup", f"{warmup:g}",
            "--timeout", f"{timeout:g}"]
    secret, shown = _env(auth)
    harness.record(argv, shown)
    out = subprocess.run(argv, env={**os.environ, **secret}, capture_output=True, text=True,
                         check=True, timeout=warmup + duration + 2 * timeout + 30).stdout
    r: dict[str, Any] = json.loads(out)
    return r


def sse_frames(url: str, body: Path, auth: Auth | None = None) -> tuple[int, int]:
    """How many `data:` frames one streamed reply has, and its body's bytes (to turn
    wrk's bytes received into chunks/s)."""
    reply = harness.http("POST", url, body.read_bytes(), auth.secret if auth else None)
    return reply.count(b"data:"), len(reply)
