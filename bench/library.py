"""Tollway as a library (issue 22): what a request costs through the in-process gateway
(`tollway.Gateway`, the SDK's httpx2 transport handing it to the gateway's own loop)
next to the same gateway over HTTP (`tollway serve`, the SDK on a keep-alive
connection), both in front of the same simulator, side by side in one run.

Three targets, each an `openai.OpenAI` (sync, no SDK retries) sending one request at a
time: *direct* (the SDK to the simulator: the floor), *over HTTP* and *in-process*.
Each repeat sends JSON and then streamed requests (16-token answers, the simulator
answering at once), the targets taking turns request by request in a rotated order,
so that the noise of a shared machine falls on all three alike; after a warm-up. A
target's latency is the median wall time of its requests in that repeat; its overhead
is that minus direct's median in the same repeat. CPU is this process's clock around
each request (the SDK, and in-process the gateway's thread too) plus, over HTTP, the
gateway process's over the repeat (from /proc); the simulator's is left out (the same
for all). Both gateways have the same configuration: embedded store, no access log.

    .venv/bin/python bench/library.py            # 7 repeats x 200 requests, ~2 min
    .venv/bin/python bench/library.py --quick    # 2 x 30 -> bench/results/
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

import cli
import harness
import procfs
import report
import tollway
from harness import Servers
from report import para, spread, table

MESSAGES: Any = [{"role": "user", "content": "What does a toll road cost to run?"}]
TARGETS = ["direct", "over HTTP", "in-process"]
MODES = ["json", "stream"]


def config(sim_url: str, store: Path) -> dict[str, Any]:
    return {"models": harness.sim_models(sim_url), "store": {"path": str(store)},
            "server": {"access_log": False}}


def send(client: openai.OpenAI, mode: str) -> None:
    if mode == "json":
        client.chat.completions.create(model="sim-model", messages=MESSAGES, max_tokens=16)
        return
    for _ in client.chat.completions.create(model="sim-model", messages=MESSAGES,
                                            max_tokens=16, stream=True):
        pass


def repeat(clients: dict[str, openai.OpenAI], gateway_pid: int, mode: str, n: int,
           r: int) -> dict[str, tuple[float, float]]:
    """n requests per target, the targets taking turns request by request (the order
    rotated each time), so the machine's noise falls on all alike: per target, (median
    wall µs, CPU µs per request). CPU: this process's clock (every thread's, not
    /proc's 10 ms ticks) around each request, and the HTTP gateway process's over the
    whole repeat (it works only for its own target's requests), from /proc."""
    walls: dict[str, list[float]] = {t: [] for t in TARGETS}
    mine = dict.fromkeys(TARGETS, 0.0)
    g0 = procfs.cpu_seconds(gateway_pid)
    for i in range(n):
        k = (i + r) % len(TARGETS)
        for target in TARGETS[k:] + TARGETS[:k]:
            c, t = time.process_time(), time.perf_counter()
            send(clients[target], mode)
            walls[target].append(time.perf_counter() - t)
            mine[target] += time.process_time() - c
    mine["over HTTP"] += procfs.cpu_seconds(gateway_pid) - g0
    return {t: (statistics.median(walls[t]) * 1e6, mine[t] / n * 1e6) for t in TARGETS}


Measured = dict[str, dict[str, list[tuple[float, float]]]]  # mode -> target -> [(µs, cpu)]


def measure(clients: dict[str, openai.OpenAI], gateway_pid: int, repeats: int, n: int,
            warm: int) -> Measured:
    got: Measured = {m: {t: [] for t in TARGETS} for m in MODES}
    for mode in MODES:
        for client in clients.values():
            for _ in range(warm):
                send(client, mode)
    for r in range(repeats):
        for mode in MODES:
            for target, figures in repeat(clients, gateway_pid, mode, n, r).items():
                got[mode][target].append(figures)
        cli.log(f"repeat {r + 1}/{repeats}: " + ", ".join(
            f"{m} {t} {got[m][t][-1][0]:,.0f} µs" for m in MODES for t in TARGETS))
    return got


def overhead(got: Measured, mode: str, target: str, i: int) -> list[float]:
    """Per repeat, the target's figure `i` (0 wall, 1 CPU) minus direct's."""
    return [a[i] - d[i] for a, d in zip(got[mode][target], got[mode]["direct"], strict=True)]


def saved(got: Measured, mode: str, i: int) -> list[float]:
    """Per repeat, over HTTP's figure `i` minus in-process's: what the library saves."""
    return [h[i] - p[i] for h, p in zip(got[mode]["over HTTP"], got[mode]["in-process"],
                                        strict=True)]


def results(got: Measured) -> str:
    rows = []
    for mode in MODES:
        for target in TARGETS:
            walls = [w for w, _ in got[mode][target]]
            cpus = [c for _, c in got[mode][target]]
            gateway = target != "direct"
            wall_over = spread(overhead(got, mode, target, 0)) if gateway else "-"
            cpu_over = spread(overhead(got, mode, target, 1)) if gateway else "-"
            rows.append([f"{mode}: {target}", spread(walls), wall_over, spread(cpus),
                         cpu_over])
        rows.append([f"{mode}: over HTTP minus in-process", "", spread(saved(got, mode, 0)),
                     "", spread(saved(got, mode, 1))])
    return table(["request: target", "latency µs", "overhead µs", "CPU µs",
                  "overhead CPU µs"], rows)


def headline(got: Measured) -> str:
    def med(mode: str, target: str, i: int) -> float:
        return statistics.median(overhead(got, mode, target, i))

    return (f"a request's overhead in-process is {med('json', 'in-process', 0):,.0f} µs "
            f"(JSON) and {med('stream', 'in-process', 0):,.0f} µs (stream), against "
            f"{med('json', 'over HTTP', 0):,.0f} and {med('stream', 'over HTTP', 0):,.0f} µs "
            f"over HTTP; CPU {med('json', 'in-process', 1):,.0f} and "
            f"{med('stream', 'in-process', 1):,.0f} µs against "
            f"{med('json', 'over HTTP', 1):,.0f} and {med('stream', 'over HTTP', 1):,.0f} µs "
            "(medians over repeats).")


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(__doc__)
    ap.add_argument("--repeats", type=int, default=7, help="(quick: 2)")
    ap.add_argument("--requests", type=int, default=200, help="per target, mode and "
                    "repeat (quick: 30)")
    args = ap.parse_args(argv)
    repeats, n, warm = (2, 30, 10) if args.quick else (args.repeats, args.requests, 50)
    with tempfile.TemporaryDirectory(prefix="bench-library-") as tmp:
        work = Path(tmp)
        with Servers(work) as sv:
            sim = harness.start_simulator(sv)
            gw = harness.start_gateway(sv, "gateway", config(sim.url, work / "http-store"))
            harness.COMMANDS.append("# in this process: tollway.Gateway.open(the same "
                                    "configuration, store $W/inprocess-store)")
            with tollway.Gateway.open(config(sim.url, work / "inprocess-store")) as lib:
                clients = {
                    "direct": openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sim",
                                            max_retries=0),
                    "over HTTP": openai.OpenAI(base_url=f"{gw.url}/v1", api_key="none",
                                               max_retries=0),
                    "in-process": lib.openai(),
                }
                got = measure(clients, gw.pid, repeats, n, warm)
                for client in clients.values():
                    client.close()
            problems = harness.log_problems(sv)
        commands = harness.commands({work: "$W"})
        cfg_text = (work / "gateway.yaml").read_text().replace(str(work), "$W")
    body = "\n\n".join([
        "## Method", "\n\n".join((__doc__ or "").split("\n\n")[1:3]),
        "## Results", results(got),
        para(f"""Median [min .. max] over {repeats} repeats of {n} requests per target and
            mode (a repeat's latency: the median of its requests). *overhead*: the
            target's figure minus direct's in the same repeat — the
            gateway's whole request path (key, route, budgets, ledger row, metrics) plus
            how the request reaches it: a loopback HTTP hop and the server's HTTP parsing
            over HTTP; in-process, two hand-overs between the caller's thread and the
            gateway's loop (the request, then the answer, chunk by chunk for a stream).
            CPU over HTTP is the client's and the gateway process's; in-process it is one
            process's. *over HTTP minus in-process*: the difference within each repeat."""),
        "## Configuration and commands",
        para("Tracebacks and ERROR lines in each process's output over the run: " + ", ".join(
            f"{p} {tb} / {err}" for p, (tb, err) in problems.items()) + "."),
        f"`$W/gateway.yaml` (the in-process gateway's differs in `store.path` only):\n\n"
        f"```yaml\n{cfg_text}```",
        f"```sh\n{commands}\n```"])
    report.write(args, title="Tollway as a library: in-process vs over HTTP",
                 headline=headline(got), body=body, libraries=["openai", "httpx2", "uvloop"])
    report.save_raw(got)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
