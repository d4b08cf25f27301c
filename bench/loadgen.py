"""Open-loop constant-rate load generator (Debian has no wrk2, so this stands in for it).

Requests are fired on a fixed schedule whatever the server does, and each latency is
measured from the request's *intended* send time, so a stalled server cannot hide its
stall by slowing the generator down (no coordinated omission). Runs in its own process
(uvloop + aiohttp) and prints one JSON object on stdout.

    loadgen.py URL --body FILE --rate 500 --duration 5 --warmup 1

A bearer key, if any, comes from $BENCH_AUTH (kept out of argv, like post.lua does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import uvloop


@dataclass(slots=True)
class Sample:
    intended: float  # perf_counter() time the request was due
    latency: float = 0.0  # intended -> last byte
    ttft: float = 0.0  # intended -> first body byte
    frames: int = 0  # SSE "data:" frames received
    ok: bool = False


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    sent_total: int = 0  # warm-up included: what the server had to handle


def count_frames(piece: bytes, tail: bytes) -> tuple[int, bytes]:
    """Count "data:" in a stream read piece by piece; a 4-byte tail catches a marker
    split across two reads and is too short to hold a whole one (no double count)."""
    buf = tail + piece
    return buf.count(b"data:"), buf[-4:]


async def one(session: aiohttp.ClientSession, url: str, body: bytes, s: Sample,
              run: Run) -> None:
    try:
        async with session.post(url, data=body) as resp:
            tail = b""
            async for piece in resp.content.iter_any():
                if not s.ttft:
                    s.ttft = time.perf_counter() - s.intended
                n, tail = count_frames(piece, tail)
                s.frames += n
            s.latency = time.perf_counter() - s.intended
            s.ok = resp.status == 200
            if not s.ok:
                run.errors[f"http_{resp.status}"] = run.errors.get(f"http_{resp.status}", 0) + 1
    except (aiohttp.ClientError, TimeoutError) as e:
        kind = type(e).__name__
        run.errors[kind] = run.errors.get(kind, 0) + 1


async def generate(url: str, body: bytes, rate: float, duration: float, warmup: float,
                   limit_s: float) -> tuple[Run, float]:
    """Fire rate*(warmup+duration) requests on schedule; keep samples after warm-up."""
    run = Run()
    run.sent_total = int(rate * (warmup + duration))
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    headers = {"Content-Type": "application/json"}
    if auth := os.environ.get("BENCH_AUTH"):
        headers["Authorization"] = f"Bearer {auth}"
    async with aiohttp.ClientSession(connector=conn, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=limit_s),
                                     skip_auto_headers=("User-Agent",)) as session:
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter() + 0.01
        total = run.sent_total
        measured_from = int(rate * warmup)
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            s = Sample(intended=due)
            if i >= measured_from:
                run.samples.append(s)
            t = asyncio.create_task(one(session, url, body, s, run))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        lag = time.perf_counter() - (start + (total - 1) / rate)  # how late the last send was
        if tasks:
            await asyncio.wait(tasks, timeout=limit_s)
    return run, lag


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 is a latency somebody really saw)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summarize(run: Run, duration: float, lag: float) -> dict[str, float | int | dict[str, int]]:
    ok = [s for s in run.samples if s.ok]
    lat = [s.latency * 1000 for s in ok]
    ttft = [s.ttft * 1000 for s in ok]
    return {
        "sent": len(run.samples), "ok": len(ok), "failed": len(run.samples) - len(ok),
        "errors": run.errors, "sent_total": run.sent_total,
        "rps": len(ok) / duration,
        "lat_p50_ms": pct(lat, 50), "lat_p99_ms": pct(lat, 99), "lat_max_ms": max(lat, default=0),
        "ttft_p50_ms": pct(ttft, 50), "ttft_p99_ms": pct(ttft, 99),
        "frames": sum(s.frames for s in ok),
        "frames_per_s": sum(s.frames for s in ok) / duration,
        "send_lag_ms": lag * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--body", required=True, help="file holding the JSON request body")
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds sent but not measured")
    ap.add_argument("--timeout", type=float, default=15.0, help="per request and for the drain")
    args = ap.parse_args()
    with open(args.body, "rb") as f:
        body = f.read()
    run, lag = uvloop.run(generate(args.url, body, args.rate, args.duration, args.warmup,
                                   args.timeout))
    json.dump(summarize(run, args.duration, lag), sys.stdout)
    print()


if __name__ == "__main__":
    main()
