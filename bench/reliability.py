"""Reliability under failure (issue 5): what the gateway does when an upstream rate-limits
it, fails and recovers, when callers flood it, and when its outbound queue is full.
Starts its own simulators and gateways (free ports, a scratch directory, all stopped
and removed however the run ends) and drives them with the official openai SDK
(max_retries=0) or, for the open-loop flood, aiohttp.

    .venv/bin/python bench/reliability.py           # ~3 min -> docs/benchmarks/reliability.md
    .venv/bin/python bench/reliability.py --quick   # 70 s flood, ~1.5 min -> bench/results/

1. rate-limited primary, healthy fallback: 1,000 requests at concurrency 25;
2. 5xx burst then recovery: the breaker's states, attempts per request, upstream calls;
3. inbound flood at 10x the configured RPM (open loop): admitted per sliding minute,
   the refusals' headers, the gateway's RSS;
4. outbound queue full: 50 concurrent requests on a deployment paced at 5 RPM.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import yaml

import cli
import harness
import report
from harness import MASTER, Server, Servers
from procfs import cpu_seconds, status_kib, wait_idle
from report import para

MESSAGES: Any = [{"role": "user", "content": "Say hello in five words."}]

# The gateway's routing settings for scenarios 1, 2 and 4: the defaults, except a 10 s
# request deadline (instead of 60) and a 5 s breaker cooldown (instead of 10), so the
# run shows both bounds at work within a few seconds.
ROUTING: dict[str, Any] = {
    "retry": {"max_attempts": 3, "max_seconds": 10.0, "base_delay": 0.2, "max_delay": 5.0,
              "max_retry_after": 10.0, "budget": 0.2, "budget_floor": 3.0},
    "breaker": {"window_seconds": 30.0, "min_requests": 10, "failure_rate": 0.5,
                "cooldown_seconds": 5.0, "half_open_probes": 3},
}
PACING = {"rpm": 5, "max_queue": 2, "max_wait_seconds": 1.0}
# The same with a wait long enough for the window to come round: two wait in the queue,
# the rest find it full.
PACING_QUEUE = {"rpm": 5, "max_queue": 2, "max_wait_seconds": 65.0}
PACED = {"paced-chat": PACING, "queued-chat": PACING_QUEUE}
FLOOD_RPM = 600
FLOOD_FACTOR = 10
POLL_S = 0.05  # breaker-state sampling period
# The whole ledger of the run (~1,200 rows) in one page: the default page of 1,000
# ends before the outage's and the queue's rows.
LEDGER = "/admin/ledger?limit=10000"
RSS_EVERY_S = 5.0


# -- processes -------------------------------------------------------------------------


async def start_gateway(servers: Servers, name: str, config: dict[str, Any]) -> Server:
    """Started from this thread (the one its death signal is tied to), waited for in
    another, and left to go idle: it loads tokenizers in the background."""
    gw = harness.start_gateway(servers, name, config, master=True, ready=False)
    await asyncio.to_thread(harness.wait_ready, gw)
    await asyncio.to_thread(wait_idle, [gw.pid])
    return gw


async def sim_config(sim: Server, **changes: Any) -> None:
    await asyncio.to_thread(harness.sim_config, sim, **changes)


async def get_json(http: aiohttp.ClientSession, url: str, master: bool = False) -> Any:
    headers = {"authorization": f"Bearer {MASTER}"} if master else {}
    async with http.get(url, headers=headers) as r:
        r.raise_for_status()
        return await r.json()


def dep(sim: Server, model: str, **kw: Any) -> dict[str, Any]:
    return harness.sim_deployment(sim.url, model, **kw)


def sdk(gw: Server, key: str = MASTER) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0,
                              timeout=120.0)


@dataclass(slots=True)
class Call:
    status: int
    latency: float  # seconds
    model: str | None = None  # x-tollway-model
    retry_after: str | None = None
    code: str | None = None  # the error's code


async def call(c: openai.AsyncOpenAI, alias: str) -> Call:
    t0 = time.perf_counter()
    try:
        raw = await c.chat.completions.with_raw_response.create(
            model=alias, messages=MESSAGES, max_tokens=5)
        return Call(200, time.perf_counter() - t0, raw.headers.get("x-tollway-model"))
    except openai.APIStatusError as e:
        return Call(e.status_code, time.perf_counter() - t0,
                    retry_after=e.response.headers.get("retry-after"), code=e.code)
    except openai.APIConnectionError:
        return Call(0, time.perf_counter() - t0)


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else math.nan
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- breaker watch ---------------------------------------------------------------------


@dataclass
class Watch:
    """Samples a deployment's breaker (GET /health/ready) and its simulator's request
    count every POLL_S, in that order, so the calls between two samples that both saw
    "open" arrived while the breaker was open."""

    http: aiohttp.ClientSession
    gw: Server
    sim: Server
    alias: str
    model: str
    t0: float
    samples: list[tuple[float, str, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def sample(self) -> tuple[float, str, int]:
        ready = await get_json(self.http, self.gw.url + "/health/ready")
        state = ready["upstreams"][self.alias][0]["breaker"]
        stats = await get_json(self.http, self.sim.url + "/_sim/stats")
        s = (time.monotonic() - self.t0, state, stats["requests_by_model"].get(self.model, 0))
        self.samples.append(s)
        return s

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(POLL_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sample()

    def state(self) -> str:
        return self.samples[-1][1] if self.samples else "closed"

    def transitions(self) -> list[tuple[float, str]]:
        """(first time seen, state) at each change, starting with the first sample."""
        out: list[tuple[float, str]] = []
        for t, state, _ in self.samples:
            if not out or out[-1][1] != state:
                out.append((t, state))
        return out

    def calls_while_open(self) -> int:
        n = 0
        for (_, s0, c0), (_, s1, c1) in zip(self.samples, self.samples[1:], strict=False):
            if s0 == s1 == "open":
                n += c1 - c0
        return n

    def calls_at(self, t: float) -> int:
        """The simulator's count at the first sample at or after t."""
        return next((c for ts, _, c in self.samples if ts >= t), self.samples[-1][2])


# -- 1. rate-limited primary -----------------------------------------------------------


async def fallback(http: aiohttp.ClientSession, gw: Server, prim: Server, backup: Server,
                   n: int, concurrency: int) -> dict[str, Any]:
    await sim_config(prim, rate_429=1.0, retry_after=30)
    c = sdk(gw)
    watch = Watch(http, gw, prim, "fallback-chat", "primary-model", time.monotonic())
    watch.start()
    calls: list[Call] = []
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            calls.append(await call(c, "fallback-chat"))

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    await watch.stop()
    await c.close()
    prim_stats = await get_json(http, prim.url + "/_sim/stats")
    back_stats = await get_json(http, backup.url + "/_sim/stats")
    br = ROUTING["breaker"]
    opened = next((t for t, s in watch.transitions() if s == "open"), None)
    lat = [x.latency * 1000 for x in calls if x.status == 200]
    return {
        "n": n, "concurrency": concurrency, "elapsed": elapsed,
        "ok": sum(x.status == 200 for x in calls),
        "statuses": Counter(x.status for x in calls),
        "models": Counter(x.model for x in calls if x.status == 200),
        "p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat, default=math.nan),
        "max_seconds": ROUTING["retry"]["max_seconds"],
        "primary_calls": prim_stats["requests_by_model"].get("primary-model", 0),
        "primary_429": prim_stats["faults_injected"]["429"],
        "backup_calls": back_stats["requests_by_model"].get("backup-model", 0),
        "opened_at": opened,
        "calls_before_open": watch.calls_at(opened) if opened is not None else None,
        "calls_while_open": watch.calls_while_open(),
        "transitions": watch.transitions(),
        "bound": br["min_requests"] + concurrency
        + br["half_open_probes"] * (elapsed / br["cooldown_seconds"] + 1),
        "samples": len(watch.samples),
    }


# -- 2. 5xx burst then recovery --------------------------------------------------------


async def outage(http: aiohttp.ClientSession, gw: Server, flaky: Server, n: int,
                 m: int) -> dict[str, Any]:
    c = sdk(gw)
    t0 = time.monotonic()
    watch = Watch(http, gw, flaky, "outage-chat", "flaky-model", t0)
    await sim_config(flaky, rate_500=1.0)
    watch.start()
    burst = [await call(c, "outage-chat") for _ in range(n)]
    calls_in_outage = (await get_json(http, flaky.url + "/_sim/stats"))["requests"]
    await sim_config(flaky, rate_500=0.0)
    healed_at = time.monotonic() - t0
    cooldown = ROUTING["breaker"]["cooldown_seconds"]
    deadline = time.monotonic() + cooldown + 10
    while (await watch.sample())[1] == "open":
        if time.monotonic() > deadline:
            raise RuntimeError("the breaker did not leave 'open' after the cooldown")
        await asyncio.sleep(0.02)  # polling the gateway's state: it has no event to await
    after = [await call(c, "outage-chat") for _ in range(m)]
    await asyncio.sleep(2 * POLL_S)
    await watch.stop()
    await c.close()
    stats = await get_json(http, flaky.url + "/_sim/stats")
    await asyncio.sleep(0.3)  # rows are recorded as a request finishes; the endpoint flushes
    rows = [r for r in (await get_json(http, gw.url + LEDGER, master=True))["data"]
            if r.get("model_asked") == "outage-chat"]
    retry = ROUTING["retry"]
    return {
        "n": n, "m": m, "burst": Counter(x.status for x in burst),
        "after": Counter(x.status for x in after),
        "burst_max_ms": max(x.latency for x in burst) * 1000,
        "refusal_max_ms": max((x.latency for x in burst if x.status == 503), default=math.nan)
        * 1000,
        "refusals_with_retry_after": sum(x.status == 503 and x.retry_after is not None
                                         for x in burst),
        "transitions": watch.transitions(), "healed_at": healed_at,
        "calls": stats["requests"], "calls_in_outage": calls_in_outage,
        "ledger_rows": len(rows),
        "attempts": Counter(r["retries"] + 1 for r in rows),
        "max_attempts": retry["max_attempts"], "budget": retry["budget"],
        "budget_floor": retry["budget_floor"], "cooldown": cooldown,
    }


# -- 4. outbound queue full ------------------------------------------------------------


async def queue_full(http: aiohttp.ClientSession, gw: Server, sim: Server, alias: str,
                     model: str, n: int, answered: asyncio.Event | None = None
                     ) -> dict[str, Any]:
    """`n` requests at once. `answered` is set once every request that was not queued
    has its answer (the queued ones may wait a minute for the window)."""
    c = sdk(gw)
    before = (await get_json(http, sim.url + "/_sim/stats"))["requests_by_model"]
    tasks = [asyncio.create_task(call(c, alias)) for _ in range(n)]
    await asyncio.wait(tasks, timeout=5)
    if answered is not None:
        answered.set()
    calls = await asyncio.gather(*tasks)
    await c.close()
    after = (await get_json(http, sim.url + "/_sim/stats"))["requests_by_model"]
    await asyncio.sleep(0.3)  # rows are recorded as a request finishes; the endpoint flushes
    rows = [r for r in (await get_json(http, gw.url + LEDGER, master=True))["data"]
            if r.get("model_asked") == alias and r["status"] == 503]
    refused = [x for x in calls if x.status == 503]
    ok = [x.latency * 1000 for x in calls if x.status == 200]
    return {
        "n": n, "alias": alias, "max_wait": PACED[alias]["max_wait_seconds"],
        "statuses": Counter(x.status for x in calls),
        "ok_now": [t for t in ok if t < 1000], "ok_queued": [t for t in ok if t >= 1000],
        "refused": len(refused), "codes": Counter(x.code for x in refused),
        "with_retry_after": sum(x.retry_after is not None for x in refused),
        "retry_after": sorted({int(x.retry_after) for x in refused
                               if x.retry_after is not None}),
        "refused_max_ms": max((x.latency for x in refused), default=math.nan) * 1000,
        "refused_p50_ms": statistics.median(x.latency for x in refused) * 1000
        if refused else math.nan,
        "upstream": after.get(model, 0) - before.get(model, 0),
        "gw_refused_p50_ms": statistics.median(r["latency_ms"] for r in rows)
        if rows else math.nan,
        "gw_refused_max_ms": max((r["latency_ms"] for r in rows), default=math.nan),
        "gw_rows": len(rows),
    }


# -- 3. inbound flood ------------------------------------------------------------------

_DUR = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """OpenAI's reset format ("20ms", "1.5s", "6m0s") in seconds; None if malformed."""
    parts = _DUR.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


@dataclass(slots=True)
class Shot:
    due: float  # monotonic time it was scheduled for
    sent: float = 0.0  # when the request was handed to aiohttp
    head: float = 0.0  # when the response headers arrived
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)


RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests", "retry-after")


async def flood(http: aiohttp.ClientSession, gw: Server, sim: Server, key: str,
                seconds: float) -> dict[str, Any]:
    rate = FLOOD_RPM * FLOOD_FACTOR / 60.0
    total = int(rate * seconds)
    body = json.dumps({"model": "flood-chat", "messages": MESSAGES,
                       "max_tokens": 5}).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    url = gw.url + "/v1/chat/completions"
    shots: list[Shot] = []
    rss: list[tuple[float, int]] = []
    errors: Counter[str] = Counter()
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(s: Shot) -> None:
            s.sent = time.monotonic()
            try:
                async with session.post(url, data=body) as r:
                    s.head = time.monotonic()
                    s.status = r.status
                    s.headers = {h: r.headers[h] for h in RATE_HEADERS if h in r.headers}
                    await r.read()
            except (aiohttp.ClientError, TimeoutError) as e:
                errors[type(e).__name__] += 1

        start = time.monotonic() + 0.05
        cpu0 = cpu_seconds(gw.pid)

        async def sample_rss() -> None:
            while True:
                rss.append((time.monotonic() - start, status_kib(gw.pid, "VmRSS")))
                await asyncio.sleep(RSS_EVERY_S)

        sampler = asyncio.create_task(sample_rss())
        tasks: set[asyncio.Task[None]] = set()
        for i in range(total):
            s = Shot(start + i / rate)
            delay = s.due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the open loop's schedule
            shots.append(s)
            t = asyncio.create_task(one(s))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            if i and i % int(rate * 30) == 0:
                cli.log(f"flood: {i / rate:.0f} s, {sum(x.status == 200 for x in shots)} admitted")
        end_sched = time.monotonic()
        if tasks:
            await asyncio.wait(tasks, timeout=35)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        rss.append((time.monotonic() - start, status_kib(gw.pid, "VmRSS")))
        cpu = cpu_seconds(gw.pid) - cpu0
    wall = end_sched - start
    upstream = (await get_json(http, sim.url + "/_sim/stats"))["requests_by_model"].get(
        "flood-model", 0)
    return analyse_flood(shots, rss, errors, seconds, wall, cpu, upstream)


def window_counts(times: list[float], lo: float, hi: float, step: float = 0.01) -> list[int]:
    """Admitted in [s, s+60) for s from lo to hi (inclusive) every `step` seconds, and
    at every admission time in that range (where a window's count can change)."""
    starts = {lo + i * step for i in range(int((hi - lo) / step) + 1)}
    starts |= {t for t in times if lo <= t <= hi}
    starts |= {t - 60.0 + 1e-9 for t in times if lo <= t - 60.0 <= hi}
    return [bisect.bisect_left(times, s + 60.0) - bisect.bisect_left(times, s)
            for s in sorted(starts)]


def analyse_flood(shots: list[Shot], rss: list[tuple[float, int]], errors: Counter[str],
                  seconds: float, wall: float, cpu: float, upstream: int) -> dict[str, Any]:
    t0 = shots[0].due
    admitted = [s for s in shots if s.status == 200]
    refused = [s for s in shots if s.status == 429]
    by_sent = sorted(s.sent - t0 for s in admitted)
    by_head = sorted(s.head - t0 for s in admitted)
    windows: dict[str, dict[str, list[int]]] = {}
    spans = {"every window inside the run": 0.0}
    if seconds >= 120:
        spans["windows starting after the first minute"] = 60.0
    for label, lo in spans.items():
        hi = seconds - 60.0
        windows[label] = {"send time": window_counts(by_sent, lo, hi),
                          "response time": window_counts(by_head, lo, hi)}
    # The refusals' headers.
    good = 0
    bad: Counter[str] = Counter()
    resets: list[float] = []
    for s in refused:
        h = s.headers
        reset = parse_duration(h.get("x-ratelimit-reset-requests", ""))
        ra = h.get("retry-after", "")
        checks = {
            "limit": h.get("x-ratelimit-limit-requests") == str(FLOOD_RPM),
            "remaining": h.get("x-ratelimit-remaining-requests") == "0",
            "reset": reset is not None and 0 < reset <= 60.0,
            "retry-after": ra.isdigit() and reset is not None
            and max(1, math.ceil(reset - 1e-3)) <= int(ra) <= max(1, math.ceil(reset)),
        }
        if all(checks.values()):
            good += 1
            assert reset is not None
            resets.append(reset)
        bad.update(k for k, ok in checks.items() if not ok)
    # Is the reset honest? Coming back at the promised time gets in (the first
    # admission after it follows within an arrival or two), and nobody got in well
    # before it (else the promise was too long).
    sent_sorted = by_sent
    lag: list[float] = []
    early = 0
    for s in refused:
        reset = parse_duration(s.headers.get("x-ratelimit-reset-requests", ""))
        if reset is None:
            continue
        promised = s.head - t0 + reset
        i = bisect.bisect_left(sent_sorted, promised)
        if i < len(sent_sorted):
            lag.append((sent_sorted[i] - promised) * 1000)
        j = bisect.bisect_right(sent_sorted, s.head - t0)
        if j < len(sent_sorted) and sent_sorted[j] < s.sent - t0 + reset - 0.05:
            early += 1
    lateness = [(s.sent - s.due) * 1000 for s in shots]
    lat_ok = [(s.head - s.sent) * 1000 for s in admitted]
    lat_refused = [(s.head - s.sent) * 1000 for s in refused]

    def rss_at(t: float) -> int:  # the sample nearest t
        return min(rss, key=lambda s: abs(s[0] - t))[1]

    after_min = [kib for ts, kib in rss if ts >= 60.0] or [rss[-1][1]]
    return {
        "seconds": seconds, "rate_per_min": FLOOD_RPM * FLOOD_FACTOR, "sent": len(shots),
        "wall": wall, "admitted": len(admitted), "refused": len(refused),
        "other": Counter(s.status for s in shots if s.status not in (200, 429)),
        "errors": errors, "upstream": upstream, "windows": windows,
        "headers_ok": good, "headers_bad": bad, "reset_median": statistics.median(resets)
        if resets else math.nan, "reset_lag_p50": pct(lag, 50), "reset_lag_p99": pct(lag, 99),
        "reset_lag_max": max(lag, default=math.nan), "early": early,
        "lateness_p99": pct(lateness, 99), "lateness_max": max(lateness),
        "lat_ok_p50": pct(lat_ok, 50), "lat_ok_p99": pct(lat_ok, 99),
        "lat_refused_p50": pct(lat_refused, 50), "lat_refused_p99": pct(lat_refused, 99),
        "rss": rss, "rss_start": rss[0][1], "rss_60": rss_at(60.0), "rss_end": rss[-1][1],
        "rss_max": max(k for _, k in rss), "rss_min_after_60": min(after_min),
        "rss_max_after_60": max(after_min), "cpu_pct": 100 * cpu / wall,
    }


# -- report ----------------------------------------------------------------------------


def fmt_counts(c: Counter[Any]) -> str:
    return ", ".join(f"{k}: {n:,}" for k, n in sorted(c.items(), key=lambda kv: str(kv[0])))


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def render(work: Path, r1: dict[str, Any], r2: dict[str, Any], r3: dict[str, Any],
           r4: list[dict[str, Any]], configs: dict[str, dict[str, Any]],
           problems: dict[str, tuple[int, int]]) -> str:
    br = ROUTING["breaker"]
    s1 = report.table(["", ""], [
        ("requests (concurrency)", f"{r1['n']:,} ({r1['concurrency']})"),
        ("succeeded", f"{r1['ok']:,} ({100 * r1['ok'] / r1['n']:.1f}%)"),
        ("answered by", fmt_counts(r1["models"])),
        ("latency p50 / p99 / max", f"{r1['p50']:.1f} / {r1['p99']:.1f} / {r1['max']:.1f} ms"),
        ("configured `routing.retry.max_seconds`", f"{r1['max_seconds'] * 1000:,.0f} ms"),
        ("wall time", f"{r1['elapsed']:.2f} s ({r1['n'] / r1['elapsed']:,.0f} requests/s)"),
        ("calls the primary received", f"{r1['primary_calls']:,} "
         f"({r1['primary_429']:,} answered 429)"),
        ("… of which while its breaker was open",
         f"{r1['calls_while_open']:,} (breaker samples every {POLL_S * 1000:.0f} ms: "
         f"{r1['samples']})"),
        ("breaker opened", "never" if r1["opened_at"] is None else
         f"at {r1['opened_at']:.2f} s, after {r1['calls_before_open']} primary calls"),
        ("bound: min_requests + concurrency + probes x (elapsed / cooldown + 1)",
         f"{r1['bound']:.0f}"),
        ("calls the backup received", f"{r1['backup_calls']:,}"),
    ], numeric=False)
    trans = " → ".join(f"{state} ({t:.2f} s)" for t, state in r2["transitions"])
    total = r2["n"] + r2["m"]
    bound = (1 + r2["budget"]) * total + r2["budget_floor"]
    s2 = report.table(["", ""], [
        ("requests", f"{r2['n']} during the outage (rate_500 = 1), {r2['m']} after it "
         "(rate_500 = 0), one at a time"),
        ("replies during the outage", fmt_counts(r2["burst"])),
        ("… 503s carrying Retry-After",
         f"{r2['refusals_with_retry_after']} of {r2['burst'].get(503, 0)}; slowest "
         f"{r2['refusal_max_ms']:.1f} ms"),
        ("replies after recovery", fmt_counts(r2["after"])),
        ("breaker states seen (time since the outage began)", trans),
        ("upstream healed at", f"{r2['healed_at']:.2f} s (cooldown {r2['cooldown']:g} s)"),
        ("attempts per request (ledger `retries` + 1)",
         f"{fmt_counts(r2['attempts'])}; max {max(r2['attempts'], default=0)} "
         f"(`max_attempts` {r2['max_attempts']}); {r2['ledger_rows']} ledger rows"),
        ("upstream calls", f"{r2['calls_in_outage']} for the {r2['n']} requests during the "
         f"outage, {r2['calls']} in all"),
        ("upstream calls / requests",
         f"{r2['calls'] / total:.2f} (bound: 1 + budget {r2['budget']:g}, plus a floor of "
         f"{r2['budget_floor']:g} retries: ≤ {bound:.0f} calls)"),
    ], numeric=False)
    win_rows = []
    for label, by in r3["windows"].items():
        for basis, counts in by.items():
            lo, hi = min(counts), max(counts)
            dev = max(abs(lo - FLOOD_RPM), abs(hi - FLOOD_RPM)) / FLOOD_RPM
            win_rows.append((f"{label}, by {basis}", f"{len(counts):,}", f"{lo:,}", f"{hi:,}",
                             f"{100 * dev:.2f}%"))
    s3w = report.table(["windows (60 s)", "windows", "min admitted", "max admitted",
                        f"worst deviation from {FLOOD_RPM}"], win_rows)
    bad = ", ".join(f"{k}: {n}" for k, n in r3["headers_bad"].items()) or "none"
    others = fmt_counts(r3["other"] + r3["errors"]) or "none"
    s3 = report.table(["", ""], [
        ("offered", f"{r3['sent']:,} requests in {r3['wall']:.1f} s "
         f"({r3['rate_per_min']:,}/min, open loop; send lateness p99 "
         f"{r3['lateness_p99']:.1f} ms, max {r3['lateness_max']:.1f} ms)"),
        ("admitted / refused (429) / other", f"{r3['admitted']:,} / {r3['refused']:,} / "
         f"{others}"),
        ("upstream calls", f"{r3['upstream']:,} (= admitted)"
         if r3["upstream"] == r3["admitted"] else f"{r3['upstream']:,} (admitted: "
         f"{r3['admitted']:,})"),
        ("refusals with correct headers",
         f"{r3['headers_ok']:,} of {r3['refused']:,} "
         f"({100 * r3['headers_ok'] / max(r3['refused'], 1):.2f}%); failed checks: {bad}"),
        ("reset honesty: first admission after the promised time",
         f"p50 {r3['reset_lag_p50']:.1f} ms, p99 {r3['reset_lag_p99']:.1f} ms, max "
         f"{r3['reset_lag_max']:.1f} ms later; admissions > 50 ms before a promise: "
         f"{r3['early']}"),
        ("latency admitted p50 / p99", f"{r3['lat_ok_p50']:.1f} / {r3['lat_ok_p99']:.1f} ms"),
        ("latency refused p50 / p99",
         f"{r3['lat_refused_p50']:.1f} / {r3['lat_refused_p99']:.1f} ms"),
        ("gateway CPU during the flood", f"{r3['cpu_pct']:.1f}% of one core"),
    ], numeric=False)
    growth = r3["rss_end"] - r3["rss_60"]
    s3m = report.table(["start", "after 60 s", "end", "max", "min / max after 60 s",
                        "end - after 60 s"], [(
        mib(r3["rss_start"]), mib(r3["rss_60"]), mib(r3["rss_end"]), mib(r3["rss_max"]),
        f"{mib(r3['rss_min_after_60'])} / {mib(r3['rss_max_after_60'])}",
        f"{growth / 1024:+.1f} ({100 * growth / r3['rss_60']:+.1f}%)")])
    samples = ", ".join(f"{mib(k)}" for _, k in r3["rss"])
    def q_row(label: str, fn: Callable[[dict[str, Any]], str]) -> tuple[str, ...]:
        return (label, *(fn(r) for r in r4))

    def ms(values: list[float]) -> str:
        return f" (max {max(values):,.0f} ms)" if values else ""

    s4 = report.table(["", *(f"`max_wait_seconds: {r['max_wait']:g}`" for r in r4)], [
        q_row("requests, all at once", lambda r: str(r["n"])),
        q_row("succeeded at once", lambda r: f"{len(r['ok_now'])}{ms(r['ok_now'])}"),
        q_row("succeeded after waiting in the queue",
              lambda r: f"{len(r['ok_queued'])}{ms(r['ok_queued'])}"),
        q_row("503 (error code)", lambda r: f"{r['refused']} ({fmt_counts(r['codes'])})"),
        q_row("… with Retry-After (values, s)", lambda r: f"{r['with_retry_after']} "
              f"({', '.join(map(str, r['retry_after'])) or '-'})"),
        q_row("other replies", lambda r: fmt_counts(Counter(
            {k: v for k, v in r["statuses"].items() if k not in (200, 503)})) or "none"),
        q_row("503 latency at the client, p50 / max",
              lambda r: f"{r['refused_p50_ms']:.1f} / {r['refused_max_ms']:.1f} ms"),
        q_row("503 latency inside the gateway, p50 / max",
              lambda r: f"{r['gw_refused_p50_ms']:.2f} / {r['gw_refused_max_ms']:.2f} ms"),
        q_row("calls the upstream received", lambda r: str(r["upstream"])),
    ], numeric=False)
    cfg_text = "\n\n".join(
        f"`$W/{name}.yaml`:\n\n```yaml\n{yaml.safe_dump(cfg, sort_keys=False).strip()}\n```"
        for name, cfg in configs.items())
    blocks = [
        para("""These are single runs on a shared, noisy machine: read the timings as
        orders of magnitude and the counts as exact."""),
        para(f"""**Method.** The script starts `tollway simulate` upstreams and `tollway
        serve` gateways on free ports in a scratch directory (`$W`, removed afterwards);
        the configurations and commands are at the end of this page. Each gateway is
        left to go idle after it starts (it loads tokenizers in the background), and the
        first one answers 20 warm-up requests on its own alias. The client is the
        official `openai` SDK with `max_retries=0` (every retry seen is the gateway's),
        except for the flood: an open-loop aiohttp generator in the same process
        (requests leave on a fixed schedule whatever the gateway answers). Breaker
        states are sampled from `GET /health/ready` every {POLL_S * 1000:.0f} ms, each
        sample followed by the simulator's request count, so the calls between two
        samples that both saw `open` arrived while the breaker was open. Routing
        settings (scenarios 1, 2, 4) are the defaults except `max_seconds: 10` and
        `cooldown_seconds: 5`."""),
        "## 1. Rate-limited primary, healthy fallback",
        para("""Alias `fallback-chat`: `primary-model` (priority 0) on a simulator
        answering every call 429 with `Retry-After: 30` (longer than `max_retry_after`,
        so never waited out), and `backup-model` (priority 1) on a healthy one."""),
        s1,
        "## 2. 5xx burst, then recovery",
        para(f"""Alias `outage-chat`, one deployment; its simulator answers 500 to every
        call, then is healed, and the script waits for the breaker to leave `open`
        before the second batch (`min_requests` {br['min_requests']}, `failure_rate`
        {br['failure_rate']}, cooldown {br['cooldown_seconds']:g} s,
        {br['half_open_probes']} half-open probes)."""),
        s2,
        f"## 3. Inbound flood at {FLOOD_FACTOR}x the configured limit",
        para(f"""A virtual key under `rate_limits: {{keys: {{rpm: {FLOOD_RPM}}}}}` (on a
        gateway of its own), offered {r3['rate_per_min']:,} requests a minute for
        {r3['seconds']:g} s. Every admitted request's send time and response time are
        recorded (the gateway decides in between); every 60 s window fully inside the
        run is counted, its start swept every 10 ms and set at every admission. A
        refusal's headers are correct when `x-ratelimit-limit-requests` is
        {FLOOD_RPM}, `x-ratelimit-remaining-requests` is 0,
        `x-ratelimit-reset-requests` parses as a duration in (0, 60 s] and
        `Retry-After` is that duration rounded up to whole seconds (at least 1). The
        reset is honest when a client coming back at the promised moment (its reply's
        arrival + the reset) is among the next admitted, and nobody is admitted well
        before it."""),
        s3w, s3,
        f"Gateway resident memory (VmRSS from `/proc/PID/status`, every "
        f"{RSS_EVERY_S:g} s), MiB:",
        s3m,
        para(f"All samples, MiB: {samples}."),
        "## 4. Outbound queue full",
        para(f"""Alias `paced-chat`, one deployment with `pacing: {json.dumps(PACING)}`,
        and alias `queued-chat`, the same with `max_wait_seconds: 65`, long enough for
        the window to come round, so that the queue itself fills; {r4[0]['n']} requests
        sent at once to each (the second batch while the flood runs on the other
        gateway: its two queued requests wait a minute). 503s answer with no upstream
        call; the latency inside the gateway is the ledger's `latency_ms`, which
        includes waiting for the event loop behind the other requests of the
        batch."""),
        s4,
        "## Configurations and commands",
        para("Tracebacks and ERROR lines in each process's output over the run, "
             "shutdown included: " + ", ".join(f"{n} {tb} / {err}"
                                               for n, (tb, err) in problems.items()) + "."),
        cfg_text,
        para("""Every command the run executed, in order (`TOLLWAY_MASTER_KEY` is a
        random secret; simulator changes and admin calls are shown as the equivalent
        `curl`):"""),
        f"```sh\n{harness.commands({work: '$W'})}\n```",
    ]
    return "\n\n".join(blocks)


def headline(r1: dict[str, Any], r2: dict[str, Any], r3: dict[str, Any]) -> str:
    worst = max(abs(c - FLOOD_RPM) for by in r3["windows"].values() for counts in by.values()
                for c in (min(counts), max(counts))) / FLOOD_RPM
    opened = ("never opened" if r1["opened_at"] is None
              else f"open after {r1['calls_before_open']} calls")
    return (f"a 429ing primary: {r1['ok']:,} of {r1['n']:,} requests answered by the "
            f"fallback, its breaker {opened}; a 5xx "
            f"outage: {r2['calls'] / (r2['n'] + r2['m']):.2f} upstream calls a request; a "
            f"flood at {FLOOD_FACTOR}x the rpm limit: every sliding minute within "
            f"{100 * worst:.2f}% of it, {r3['headers_ok']:,} of {r3['refused']:,} "
            "refusals with correct headers.")


# -- main ------------------------------------------------------------------------------


async def run(servers: Servers, args: argparse.Namespace) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        prim, backup, flaky = [harness.start_simulator(servers, n)
                               for n in ("sim-primary", "sim-backup", "sim-flaky")]
        main_cfg: dict[str, Any] = {
            "routing": ROUTING,
            "models": {
                "warmup-chat": {"deployments": [dep(backup, "warmup-model")]},
                "fallback-chat": {"deployments": [dep(prim, "primary-model", priority=0),
                                                  dep(backup, "backup-model", priority=1)]},
                "outage-chat": {"deployments": [dep(flaky, "flaky-model")]},
                "paced-chat": {"deployments": [dep(backup, "paced-model", pacing=PACING)]},
                "queued-chat": {"deployments": [dep(backup, "queued-model",
                                                    pacing=PACING_QUEUE)]},
            },
        }
        flood_cfg: dict[str, Any] = {
            "rate_limits": {"keys": {"rpm": FLOOD_RPM}},
            "models": {"flood-chat": {"deployments": [dep(backup, "flood-model")]}},
        }
        gw = await start_gateway(servers, "gateway", main_cfg)
        c = sdk(gw)
        warm = [await call(c, "warmup-chat") for _ in range(20)]
        await c.close()
        if any(x.status != 200 for x in warm):
            raise RuntimeError(f"warm-up failed: {Counter(x.status for x in warm)}")

        cli.log("1. rate-limited primary, healthy fallback")
        r1 = await fallback(http, gw, prim, backup, 1000, 25)
        cli.log(f"   {r1['ok']}/{r1['n']} ok, p99 {r1['p99']:.1f} ms, max {r1['max']:.1f} ms, "
            f"primary calls {r1['primary_calls']} ({r1['calls_while_open']} while open)")
        cli.log("2. 5xx burst, then recovery")
        r2 = await outage(http, gw, flaky, 40, 20)
        cli.log(f"   {r2['transitions']}; attempts {dict(r2['attempts'])}; "
            f"calls {r2['calls']} for {r2['n'] + r2['m']} requests")
        cli.log("4. outbound queue full")
        r4a = await queue_full(http, gw, backup, "paced-chat", "paced-model", 50)
        cli.log(f"   {dict(r4a['statuses'])} {dict(r4a['codes'])}, 503 max "
            f"{r4a['refused_max_ms']:.1f} ms")
        answered = asyncio.Event()
        task4b = asyncio.create_task(queue_full(http, gw, backup, "queued-chat",
                                                "queued-model", 50, answered))
        await answered.wait()

        cli.log(f"3. inbound flood, {args.flood_seconds:g} s")
        fgw = await start_gateway(servers, "gateway-flood", flood_cfg)
        key = await asyncio.to_thread(harness.create_key, fgw, {"name": "flood"})
        r3 = await flood(http, fgw, backup, key, args.flood_seconds)
        for label, by in r3["windows"].items():
            cli.log(f"   {label}: " + "; ".join(f"by {b} min {min(v)} max {max(v)}"
                                            for b, v in by.items()))
        cli.log(f"   headers ok {r3['headers_ok']}/{r3['refused']}; RSS MiB start "
            f"{mib(r3['rss_start'])}, 60 s {mib(r3['rss_60'])}, end {mib(r3['rss_end'])}, "
            f"max {mib(r3['rss_max'])}")
        r4b = await task4b
        cli.log(f"   queued-chat: {dict(r4b['statuses'])} {dict(r4b['codes'])}, "
            f"{len(r4b['ok_queued'])} served from the queue")
        return {"r1": r1, "r2": r2, "r3": r3, "r4": [r4a, r4b],
                "configs": {"gateway": main_cfg, "gateway-flood": flood_cfg}}


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(__doc__)
    ap.add_argument("--flood-seconds", type=float,
                    help="length of the inbound flood (default 150, quick 70; >= 61)")
    args = ap.parse_args(argv)
    args.flood_seconds = args.flood_seconds or (70.0 if args.quick else 150.0)
    if args.flood_seconds < 61:
        ap.error("--flood-seconds: at least 61 (one full 60 s window)")
    with tempfile.TemporaryDirectory(prefix="tollway-reliability-") as tmp:
        with Servers(Path(tmp)) as servers:
            res = harness.run_checked(servers, run(servers, args))
        problems = harness.log_problems(servers)
    for name, (tb, err) in problems.items():
        if tb or err:
            cli.log(f"{name}: {tb} tracebacks, {err} ERROR lines in its output")
    report.write(args, title="Reliability", headline=headline(res["r1"], res["r2"], res["r3"]),
                 body=render(Path(tmp), res["r1"], res["r2"], res["r3"], res["r4"],
                             res["configs"], problems),
                 libraries=("openai", "aiohttp"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
