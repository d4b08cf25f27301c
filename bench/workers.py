"""Fleet throughput (issue 7): `tollway serve --workers 1` against `--workers 2` on the
shared store (Redis + PostgreSQL), with one worker on the embedded store alongside for
comparison, all in front of one `tollway simulate`, for JSON and streamed replies,
driven by wrk.

    .venv/bin/python bench/workers.py           # ~3 min -> docs/benchmarks/workers.md
    .venv/bin/python bench/workers.py --quick   # ~1 min -> bench/results/workers-quick.md

Needs the machine's Redis and PostgreSQL (`make services`). A throwaway PostgreSQL
database is created, migrated with `tollway migrate` and dropped afterwards; a Redis
database of its own (9 by default) is flushed before and after. Every request carries
a virtual key with a large dollar budget and a per-key rpm limit that never binds, so
each one does the store's work: key lookup, rate-limit take, budget reserve and
settle, one ledger row.

The three gateways run at once (an idle one costs nothing); within each repeat every
target is measured once, in a rotated order, so drift on a shared machine hits them
alike, and ratios are taken within a repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis
import yaml

import cli
import features_target
import harness
import load
import report
from harness import CHAT, Server, Servers
from procfs import CpuSnapshot, cmdline, cpu_of, named, tree, wait_idle
from report import para, spread

JSON_TOKENS = 16  # the simulator's reply length for JSON, as in bench/overhead.py
STREAM_TOKENS = 50
HOLD_SECONDS = 900  # budgets.hold_seconds' default: how long a settle mark stays in Redis
SETTLE_S = 1.2  # after a run: the ledger's flush_seconds (1.0) and a little more
LEAK = (" (requests whose client left, when a wrk run ended, while their budget reserve was"
        " in flight: the hold was made in Redis but never settled, and counts against the"
        " budget until `hold_seconds` pass)")

TARGETS = ("embedded-1", "shared-1", "shared-2")
LABEL = {"embedded-1": "embedded store, 1 worker", "shared-1": "shared store, `--workers 1`",
         "shared-2": "shared store, `--workers 2`"}
GROUPS = ("gateway", "simulator", "redis", "postgres")

@dataclass(frozen=True)
class Plan:
    repeats: int
    duration: float  # measured seconds per wrk run
    warmup: float  # seconds of wrk per target before measuring, per scenario
    connections: int


FULL = Plan(repeats=3, duration=5.0, warmup=2.0, connections=64)
QUICK = Plan(repeats=1, duration=2.0, warmup=1.0, connections=64)


# -- the bed -----------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    server: Server
    key: load.Auth  # the virtual key its requests carry
    workers: int
    pids: list[int] = field(default_factory=list)  # serve and its descendants

    @property
    def url(self) -> str:
        return self.server.url + CHAT

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the workers, or serve itself with one."""
        if self.workers == 1:
            return [self.server.pid]
        return [p for p in self.pids[1:] if b"spawn_main" in cmdline(p)]


def sim_requests(sim: Server) -> int:
    n: int = json.loads(harness.http("GET", sim.url + "/_sim/stats"))["requests"]
    return n


# -- the stores ----------------------------------------------------------------------------


def pg_admin(url: str, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def pg_fetch(url: str, sql: str) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


def with_db(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


def redis_state(url: str) -> dict[str, Any]:
    """Keys by kind (the first part after the layout prefix), the memory they use, and
    what the settle marks alone take: `used_memory` before and after deleting them."""
    r = redis.Redis.from_url(url)
    try:
        kinds: dict[str, int] = defaultdict(int)
        marks: list[bytes] = []
        for k in r.scan_iter(count=10_000):
            parts = k.decode(errors="replace").split(":")[2:]  # after the layout prefix
            if parts and parts[0] in ("{b}", "{l}"):
                parts = parts[1:]
            kinds[parts[0] if parts else ""] += 1
            if parts and parts[0] == "settled":
                marks.append(k)
        used = int(r.info("memory")["used_memory"])
        for i in range(0, len(marks), 5000):
            r.delete(*marks[i:i + 5000])
        without_marks = int(r.info("memory")["used_memory"])
        r.flushdb()
        empty = int(r.info("memory")["used_memory"])
        return {"keys": sum(kinds.values()), "kinds": dict(kinds), "used": used - empty,
                "marks": len(marks), "marks_used": used - without_marks}
    finally:
        r.close()


def redis_commandstats(url: str) -> dict[str, tuple[int, int]]:
    """Server-wide calls and µs per command (commands inside scripts are counted too)."""
    r = redis.Redis.from_url(url)
    try:
        stats = r.info("commandstats")
    finally:
        r.close()
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for k, v in stats.items()}


def redis_flush(url: str) -> None:
    r = redis.Redis.from_url(url)
    try:
        r.flushdb()
    finally:
        r.close()


@dataclass
class Scenario:
    key: str
    title: str
    unit: str  # "req/s" or "streams/s"
    body: Path
    frames: int = 0  # SSE data: frames per stream
    runs: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {t: [] for t in TARGETS})

    def values(self, target: str, metric: str) -> list[float]:
        return [float(r[metric]) for r in self.runs[target]]

    def ratio(self, num: str, den: str, metric: str) -> list[float]:
        return [a / b for a, b in zip(self.values(num, metric), self.values(den, metric),
                                      strict=True) if b]


def cpu_groups(t: Target, sim: Server) -> dict[str, list[int]]:
    """The processes whose CPU is counted, by group (PostgreSQL backends come and go)."""
    return {"gateway": t.pids, "simulator": [sim.pid], "redis": named("redis-server"),
            "postgres": named("postgres")}


def measure(t: Target, sim: Server, sc: Scenario, plan: Plan, redis_url: str
            ) -> dict[str, Any]:
    workers = t.worker_pids()
    calls0 = sim_requests(sim)
    cmd0 = redis_commandstats(redis_url)
    w0 = cpu_of(workers)
    a = CpuSnapshot.take(cpu_groups(t, sim))
    r = load.run_wrk(t.url, sc.body, plan.connections, plan.duration, t.key)
    b = CpuSnapshot.take(cpu_groups(t, sim))
    w1 = cpu_of(workers)
    # The work a request leaves behind (the ledger's next batch) belongs to it too.
    time.sleep(SETTLE_S)
    wait_idle(t.pids, within=5.0, quiet=0.005)
    c = CpuSnapshot.take(cpu_groups(t, sim))
    cmd1 = redis_commandstats(redis_url)
    r["upstream_calls"] = sim_requests(sim) - calls0
    r["redis_commands"] = {k: (n - cmd0.get(k, (0, 0))[0], us - cmd0.get(k, (0, 0))[1])
                           for k, (n, us) in cmd1.items() if n != cmd0.get(k, (0, 0))[0]}
    r |= b.usage_since(a)
    r["cpu_workers"] = [100 * (w1.get(p, 0.0) - w0.get(p, 0.0)) / r["wall_s"]
                        for p in workers]
    total = c.seconds_since(a)
    n = max(r["requests"], 1)
    r["upstream_per_req"] = r["upstream_calls"] / n
    r["gw_us"] = 1e6 * total["gateway"] / n
    r["redis_us"] = 1e6 * total["redis"] / n
    r["pg_us"] = 1e6 * total["postgres"] / n
    r["sim_us"] = 1e6 * total["simulator"] / n
    return r


def warm_up(targets: list[Target], sc: Scenario, plan: Plan) -> None:
    for t in targets:
        load.run_wrk(t.url, sc.body, plan.connections, plan.warmup, t.key)
    for t in targets:
        wait_idle(t.pids, within=10.0)


def interleave(targets: list[Target], sim: Server, sc: Scenario, plan: Plan,
               redis_url: str) -> None:
    for rep in range(plan.repeats):
        k = rep % len(targets)
        for t in targets[k:] + targets[:k]:  # rotate: no target always goes first
            sim.check_alive()
            t.server.check_alive()
            now = tree(t.server.pid)
            if now != t.pids:
                raise RuntimeError(f"{t.name}: its processes changed from {t.pids} to {now} "
                                   "(a worker restarted?)")
            r = measure(t, sim, sc, plan, redis_url)
            sc.runs[t.name].append(r)
            split = "/".join(f"{x:.0f}" for x in r["cpu_workers"])
            cli.log(f"{sc.key} #{rep + 1} {t.name:10s} {r['rps']:7.0f} {sc.unit} "
                    f"p50 {r['lat_p50_ms']:6.1f} p99 {r['lat_p99_ms']:6.1f} ms  gw "
                    f"{r['cpu_gateway']:4.0f}% ({split}) {r['gw_us']:5.0f} µs/req  sim "
                    f"{r['cpu_simulator']:3.0f}% redis {r['cpu_redis']:3.0f}% pg "
                    f"{r['cpu_postgres']:3.0f}% wrk {r['cpu_loadgen']:3.0f}% busy "
                    f"{r['cpu_busy']:3.0f}% steal {r['cpu_steal']:3.0f}% err {r['errors']}")


# -- the run ---------------------------------------------------------------------------------


def run(servers: Servers, plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    db = f"tollway_bench_workers_{secrets.token_hex(4)}"
    pg_url = with_db(args.postgres_admin_url, db)
    harness.COMMANDS.append(f"redis-cli -u {args.redis_url} FLUSHDB")
    redis_flush(args.redis_url)
    harness.COMMANDS.append(f"psql {args.postgres_admin_url} -c 'CREATE DATABASE {db}'")
    pg_admin(args.postgres_admin_url, f'CREATE DATABASE "{db}"')
    try:
        migrate = [*harness.tollway_argv(), "migrate", "--postgres-url", pg_url]
        harness.record(migrate)
        subprocess.run(migrate, check=True, capture_output=True, timeout=60)
        out = measure_all(servers, plan, args.redis_url, pg_url)
        servers.stop_all()  # shutdown flushes every worker's ledger buffer
        rows = pg_fetch(pg_url, "SELECT status, outcome, count(*) AS n, "
                        "coalesce(sum(cost_usd), 0) AS usd FROM ledger GROUP BY 1, 2 "
                        "ORDER BY 3 DESC")
        out["ledger"] = {"rows": sum(r["n"] for r in rows),
                         "usd": float(sum(r["usd"] for r in rows)),
                         "by_status": [(r["status"], r["outcome"], r["n"]) for r in rows]}
        out["redis"] = redis_state(args.redis_url)  # flushes the database
        return out
    finally:
        servers.stop_all()
        harness.COMMANDS.append(f"psql {args.postgres_admin_url} -c 'DROP DATABASE {db} "
                                "WITH (FORCE)'")
        pg_admin(args.postgres_admin_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        harness.COMMANDS.append(f"redis-cli -u {args.redis_url} FLUSHDB  # again, at the end")
        redis_flush(args.redis_url)


def measure_all(servers: Servers, plan: Plan, redis_url: str, pg_url: str) -> dict[str, Any]:
    started = time.monotonic()
    sim = harness.start_simulator(servers)
    shared = {"redis_url": redis_url, "postgres_url": pg_url}
    embedded = {"path": str(servers.work / "embedded-store")}
    configs = {"embedded-1": features_target.config(sim.url, embedded),
               "shared-1": features_target.config(sim.url, shared),
               "shared-2": features_target.config(sim.url, shared)}
    gws = {name: harness.start_gateway(servers, name, cfg, args=["--workers", name[-1]],
                                       master=True, ready=False)
           for name, cfg in configs.items()}
    for gw in gws.values():
        harness.wait_ready(gw)
    # One key for the fleet (both shared gateways read it from PostgreSQL), one for the
    # embedded gateway's own store.
    shared_key = load.Auth(harness.create_key(gws["shared-1"], features_target.KEY), "$KEY")
    keys = {"embedded-1": load.Auth(harness.create_key(gws["embedded-1"], features_target.KEY),
                                    "$KEY"),
            "shared-1": shared_key, "shared-2": shared_key}
    targets = [Target(n, gws[n], keys[n], int(n[-1])) for n in TARGETS]
    for t in targets:
        t.pids = tree(t.server.pid)
        if t.workers > 1 and len(t.worker_pids()) != t.workers:
            raise RuntimeError(f"{t.name}: {len(t.worker_pids())} workers found, not "
                               f"{t.workers}: {t.pids}")
        wait_idle(t.pids)
    json_body = load.body_file(servers.work, "json", stream=False)
    sse_body = load.body_file(servers.work, "sse", stream=True)
    scenarios = [Scenario("json", "Non-streaming throughput", "req/s", json_body),
                 Scenario("stream", f"Streaming throughput: {STREAM_TOKENS} tokens, no token "
                          "delay", "streams/s", sse_body)]
    for sc in scenarios:
        tokens = JSON_TOKENS if sc.key == "json" else STREAM_TOKENS
        harness.sim_config(sim, ttft_ms=0, token_ms=0, output_tokens=tokens)
        if sc.key == "stream":
            sc.frames = load.sse_frames(targets[0].url, sse_body, targets[0].key)[0]
        cli.log(f"{sc.key}: warm-up, {plan.warmup:g} s per target")
        warm_up(targets, sc, plan)
        interleave(targets, sim, sc, plan, redis_url)
    return {"scenarios": scenarios, "configs": configs,
            "bodies": json_body.read_text() + "\n" + sse_body.read_text(),
            "elapsed": time.monotonic() - started,
            "requests_shared": sum(r["requests"] for sc in scenarios
                                   for t in ("shared-1", "shared-2") for r in sc.runs[t])}


# -- report ----------------------------------------------------------------------------------


def med(sc: Scenario, t: str, metric: str) -> float:
    return statistics.median(sc.values(t, metric))


# The per-scenario table's figures, after the target's name, and their formats.
COLUMNS = [("rps", "{:,.0f}"), ("lat_p50_ms", "{:,.1f}"), ("lat_p99_ms", "{:,.1f}"),
           ("cpu_gateway", "{:,.0f}"), ("gw_us", "{:,.0f}"), ("redis_us", "{:,.0f}"),
           ("pg_us", "{:,.0f}"),
           ("cpu_simulator", "{:,.0f}"), ("cpu_redis", "{:,.0f}"), ("cpu_postgres", "{:,.0f}"),
           ("cpu_loadgen", "{:,.0f}"), ("cpu_busy", "{:,.0f}"), ("cpu_steal", "{:,.0f}"),
           ("upstream_per_req", "{:.3f}")]


def scenario_table(sc: Scenario) -> str:
    rows = []
    for t in TARGETS:
        cols = [spread(sc.values(t, m), f) for m, f in COLUMNS]
        rows.append([LABEL[t], *cols, str(int(sum(sc.values(t, "errors"))))])
    unit = "req" if sc.unit == "req/s" else "stream"
    return report.table(
        ["target", sc.unit, "p50 ms", "p99 ms", "gateway CPU %", f"gateway µs/{unit}",
         f"Redis µs/{unit}", f"PostgreSQL µs/{unit}", "simulator CPU %", "Redis CPU %",
         "PostgreSQL CPU %", "wrk CPU %", "machine busy %", "steal %",
         f"upstream calls / {unit}", "errors"], rows)


def redis_summary(sc: Scenario) -> str:
    """Redis commands per request over all the shared runs of a scenario (from INFO
    commandstats: a script's time includes the commands it runs, which are also counted
    on their own)."""
    runs = [r for t in ("shared-1", "shared-2") for r in sc.runs[t]]
    n = sum(r["requests"] for r in runs) or 1
    calls: dict[str, int] = defaultdict(int)
    usec: dict[str, int] = defaultdict(int)
    for r in runs:
        for k, (c, u) in r["redis_commands"].items():
            calls[k] += c
            usec[k] += u
    top = sorted(calls, key=lambda k: -usec[k])[:8]
    return ", ".join(f"`{k}` {calls[k] / n:.2f} ({usec[k] / n:.1f} µs)" for k in top)


def ratios(sc: Scenario, connections: int) -> str:
    r21 = spread(sc.ratio("shared-2", "shared-1", "rps"), "{:.2f}")
    r1e = spread(sc.ratio("shared-1", "embedded-1", "rps"), "{:.2f}")
    u21 = spread(sc.ratio("shared-2", "shared-1", "gw_us"), "{:.2f}")
    u1e = spread(sc.ratio("shared-1", "embedded-1", "gw_us"), "{:.2f}")
    split = "; ".join(" / ".join(f"{x:.0f}" for x in r["cpu_workers"])
                      for r in sc.runs["shared-2"])
    runs = sc.runs["shared-2"]
    lopsided = [r for r in runs if min(r["cpu_workers"]) < 0.15 * sum(r["cpu_workers"])]
    note = ""
    if lopsided:
        note = (f""" In {len(lopsided)} of {len(runs)} runs one worker took (nearly) all
        of wrk's {connections} connections, and that run's throughput is one
        worker's: the workers accept from one shared listening socket, so how wrk's
        burst of new connections splits between them is chance, and wrk keeps them for
        the whole run.""")
    unit = "request" if sc.key == "json" else "stream"
    return para(f"""Ratios per repeat, {sc.unit}: **2 workers / 1 worker (shared) =
    {r21}**; shared / embedded (1 worker each) = {r1e}. Gateway CPU per {unit}: 2 / 1
    = {u21}; shared / embedded = {u1e}. CPU % of each of the two workers, per run:
    {split}.{note}""")


def limits_text(scs: list[Scenario]) -> str:
    parts = []
    for sc in scs:
        r = {m: med(sc, "shared-2", m) for m in ("cpu_gateway", "cpu_simulator", "cpu_redis",
                                                 "cpu_postgres", "cpu_loadgen", "cpu_busy",
                                                 "cpu_steal", "cpu_other")}
        kind = "JSON" if sc.key == "json" else "streaming"
        parts.append(f"{kind}: machine busy {r['cpu_busy']:.0f} % of 200 "
                     f"(gateway {r['cpu_gateway']:.0f}, simulator {r['cpu_simulator']:.0f}, "
                     f"Redis {r['cpu_redis']:.0f}, PostgreSQL {r['cpu_postgres']:.0f}, wrk "
                     f"{r['cpu_loadgen']:.0f}, other {r['cpu_other']:.0f}) plus steal "
                     f"{r['cpu_steal']:.0f}")
    return "; ".join(parts)


def render(plan: Plan, res: dict[str, Any]) -> str:
    scs: list[Scenario] = res["scenarios"]
    head = []
    for sc in scs:
        head.append([f"{sc.unit} ({'JSON' if sc.key == 'json' else 'streaming'})",
                     *(spread(sc.values(t, "rps")) for t in TARGETS),
                     spread(sc.ratio("shared-2", "shared-1", "rps"), "{:.2f}")])
        head.append([f"gateway CPU µs per {'request' if sc.key == 'json' else 'stream'}",
                     *(spread(sc.values(t, "gw_us")) for t in TARGETS),
                     spread(sc.ratio("shared-2", "shared-1", "gw_us"), "{:.2f}")])
    summary = report.table(["", *(LABEL[t] for t in TARGETS), "2 workers / 1 worker"], head)
    led, rs = res["ledger"], res["redis"]
    kinds = ", ".join(f"{k or '(other)'} {n:,}" for k, n in sorted(rs["kinds"].items()))
    cfg = res["configs"]
    cfg_text = ("`$W/shared-1.yaml` (`shared-2.yaml` is the same; `embedded-1.yaml` has "
                "`store: {path: $W/embedded-store}` instead):\n\n```yaml\n"
                + yaml.safe_dump(cfg["shared-1"], sort_keys=False).strip()
                .replace(str(res["work"]), "$W") + "\n```")
    frames = next((sc.frames for sc in scs if sc.key == "stream"), 0)
    key = features_target.KEY
    blocks = [
        "Redis and PostgreSQL must be running (`make services`).",
        para(f"""**Method.** One `tollway simulate` upstream (one process; replies of
        {JSON_TOKENS} tokens for JSON, {STREAM_TOKENS} for streams, no delays) and three
        gateways in front of it, all started at once and measured side by side: one
        worker on the embedded store, and `tollway serve --workers 1` and `--workers 2`
        on the shared store (Redis database `{res['redis_url'].rsplit('/', 1)[-1]}`,
        flushed before and after, and a throwaway PostgreSQL database made for the run,
        migrated with `tollway migrate` and dropped at the end). Every request carries a
        virtual key with a ${key['budgets'][0]['usd']:,.0f} daily budget and `rpm:
        {key['rpm']:,}` (never binding), and the model has a price, so each request does
        the store's whole work: key lookup (cached, invalidated by NOTIFY), rate-limit
        take, budget reserve and settle, one ledger row (batched each second); the two
        shared gateways share one key, as a fleet would. Gateways log each request
        (`access_log: true`). Load is wrk (one thread,
        {plan.connections} keep-alive connections, closed loop, {plan.duration:g} s per
        run, after {plan.warmup:g} s of warm-up per target and scenario), {plan.repeats}
        repeat{"s" if plan.repeats != 1 else ""} with the three targets interleaved in a
        rotated order; figures are the median [min .. max] over the repeats, ratios are
        taken within a repeat."""),
        para("""**CPU** is read from `/proc/PID/stat` (100 % = one core) over each wrk
        run: *gateway* is the `tollway serve` process and all its descendants (with
        `--workers 2`: the supervisor, the two workers and multiprocessing's resource
        tracker), *Redis* the `redis-server` process, *PostgreSQL* every `postgres`
        process, *machine busy* everything (of 200 %), *steal* the time the hypervisor
        gave our vCPUs to someone else. *µs per request* is CPU time divided by the
        requests wrk completed, counted from the start of the run until the gateway is
        idle again after it (at least 1.2 s: the last ledger batch is the run's
        work)."""),
        summary,
    ]
    for sc in scs:
        title = sc.title + (f" ({frames} SSE frames per stream)" if sc.key == "stream" else "")
        blocks += [f"## {title}", scenario_table(sc), ratios(sc, plan.connections),
                   para("Redis commands per request in the shared runs, calls (time inside "
                        "Redis, from `INFO commandstats`; a script's time includes the "
                        "commands it runs, which are listed on their own too): "
                        + redis_summary(sc) + ".")]
    r21 = {sc.key: statistics.median(sc.ratio("shared-2", "shared-1", "rps")) for sc in scs}
    js = next(sc for sc in scs if sc.key == "json")
    redis_us = statistics.median(js.values("shared-1", "redis_us")
                                 + js.values("shared-2", "redis_us"))
    statuses = ", ".join(f"{n:,} with status {st} ({oc})" for st, oc, n in led["by_status"])
    per_mark = rs["marks_used"] / max(rs["marks"], 1)
    rate2 = med(js, "shared-2", "rps")
    marks = rate2 * HOLD_SECONDS
    blocks += [
        "## What limits two workers here",
        para(f"""Two workers on two cores cannot double throughput here: the simulator,
        wrk, Redis and PostgreSQL run on the same two cores. With `--workers 2`
        (medians): {limits_text(scs)}. The machine is full while neither worker is (see
        each worker's CPU above), so the 2 / 1 ratio ({r21.get('json', 0):.2f} for JSON,
        {r21.get('stream', 0):.2f} for streams) measures how much of the machine's spare
        CPU a second worker turns into throughput, not how the gateway scales on a
        machine with cores to spare; the per-request CPU columns are the figures that
        carry over to one. How evenly the workers share the load is up to the kernel:
        they accept from one shared socket, so a burst of new connections can land on
        one of them (see each worker's CPU above). Redis does not scale with the
        gateways at all: it runs on one core for the whole fleet, and at
        {redis_us:,.0f} µs of Redis CPU per JSON request (median over the shared runs)
        one Redis core would serve about {1e6 / redis_us:,.0f} requests/s on this CPU,
        however many gateways there are."""),
        "## Store state after the run",
        para(f"""Ledger rows in PostgreSQL (after the gateways were stopped, which flushes
        them): {led['rows']:,} ({statuses}), ${led['usd']:.4f} in all; wrk counted
        {res['requests_shared']:,} completed requests to the two
        shared gateways in the measured runs (warm-ups and requests in flight when a run
        ended come on top). Redis database: {rs['keys']:,} keys ({kinds}), using
        {rs['used'] / 2**20:.1f} MiB (the server's `used_memory` before and after the
        final flush). Nearly all are settle marks: one per request, kept for the hold's
        lifetime (`budgets.hold_seconds`, {HOLD_SECONDS} s by default), {per_mark:,.0f}
        bytes each (`used_memory` before and after deleting them), so a fleet holds rate
        x {HOLD_SECONDS} s of them: at the two-worker JSON rate here ({rate2:,.0f}
        req/s) about {marks / 1e6:.1f} million keys, ~{marks * per_mark / 2**20:,.0f}
        MiB. Budget holds still open after every request had finished:
        {rs['kinds'].get('hold', 0):,}{LEAK if rs['kinds'].get('hold', 0) else ''}."""),
        "## Configuration and commands",
        cfg_text,
        para("""Every command the run executed, in order (`TOLLWAY_MASTER_KEY` is a random
        secret, `$KEY` the virtual key the admin call on that gateway returned, which
        `bench/post.lua` sends as a bearer token; the shorter wrk runs are the warm-ups;
        the stores were prepared with redis-py and asyncpg, shown as the equivalent
        `redis-cli` and `psql`):"""),
        f"```sh\n{harness.commands({res['work']: '$W'})}\n```",
        "Request bodies (`$W/json.json`, `$W/sse.json`):",
        f"```json\n{res['bodies']}\n```",
    ]
    return "\n\n".join(blocks)


def headline(res: dict[str, Any]) -> str:
    js, st = res["scenarios"]

    def r21(sc: Scenario, metric: str) -> str:
        return f"{statistics.median(sc.ratio('shared-2', 'shared-1', metric)):.2f}"

    return (f"on the shared store, `--workers 2` serves {r21(js, 'rps')}x the JSON req/s "
            f"and {r21(st, 'rps')}x the streams/s of `--workers 1` on this 2-core machine, "
            f"at {med(js, 'shared-1', 'gw_us'):,.0f} µs of gateway CPU per JSON request "
            f"(embedded store: {med(js, 'embedded-1', 'gw_us'):,.0f}).")



# -- entry -------------------------------------------------------------------------------------


def services_up(args: argparse.Namespace) -> str | None:
    try:
        r = redis.Redis.from_url(args.redis_url, socket_timeout=3)
        try:
            r.ping()
        finally:
            r.close()
        pg_admin(args.postgres_admin_url, "SELECT 1")
    except (OSError, redis.RedisError, asyncpg.PostgresError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(__doc__)
    ap.add_argument("--repeats", type=int, help="override the number of repeats")
    ap.add_argument("--duration", type=float, help="override measured seconds per run")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/9",
                    help="a Redis database for this run alone: flushed before and after "
                    "(default: %(default)s)")
    ap.add_argument("--postgres-admin-url",
                    default="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="where to create (and drop) the run's database "
                    "(default: %(default)s)")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.repeats:
        plan = Plan(args.repeats, plan.duration, plan.warmup, plan.connections)
    if args.duration:
        plan = Plan(plan.repeats, args.duration, plan.warmup, plan.connections)
    problem = services_up(args)
    if problem:
        cli.log(f"needs Redis ({args.redis_url}) and PostgreSQL ({args.postgres_admin_url}); "
                f"start them with `make services`. {problem}")
        return 2
    with tempfile.TemporaryDirectory(prefix="tollway-workers-") as tmp, \
            Servers(Path(tmp)) as servers:
        res = run(servers, plan, args)
        res |= {"work": Path(tmp), "redis_url": args.redis_url}
        text = render(plan, res)
    report.write(args, title="Workers: one or two on the shared store", headline=headline(res),
                 body=text, libraries=("uvicorn", "redis", "asyncpg"),
                 extra=[("load generator", report.wrk_version())])
    raw = report.save_raw({"plan": asdict(plan), "ledger": res["ledger"],
                           "redis": res["redis"],
                           "runs": {sc.key: sc.runs for sc in res["scenarios"]}})
    cli.log(f"and {raw.relative_to(harness.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
