"""The gateway's CPU per request against an earlier commit's, side by side in one run
(the redesign's acceptance: CPU per JSON request and per stream equal or lower).

`tollway serve` from REV's src/ (extracted into a scratch directory and put first on
PYTHONPATH) and `tollway serve` from the working tree (the editable install) run at
once, default settings and no key, in front of one simulator. Each gateway prints
where its `tollway` package was imported from, and the run stops unless each ran the
code it stands for. Per repeat, wrk drives each in turn (which goes first alternates)
with a JSON body, then with a streamed one; a run's CPU is the gateway's from the start
of the run until it is idle again after it (the ledger's last batch is the run's work).
Both gateways are started afresh for every repeat.

    .venv/bin/python bench/compare.py                  # ~3.5 min, against c606eb4
    .venv/bin/python bench/compare.py --base REV
    .venv/bin/python bench/compare.py --quick          # 2 short repeats -> bench/results/

While src/ is the same at REV and in the working tree, this compares a commit with
itself: the ratio should be ~1.00, and its spread is the method's noise.

CPU time on this 2-core machine is good to about ±5 % at the medians. So the gateway's
own work is also counted exactly: `bench/request_path.py` drives each revision's request
path in-process (ASGI, an upstream that answers at once) under valgrind's callgrind,
which counts instructions — the same figure on every run, whatever else the machine is
doing.
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import cli
import harness
import load
import report
from harness import CHAT, ROOT, Server, Servers
from procfs import CpuSnapshot, wait_idle
from report import spread

BASE = "c606eb4"  # the last commit before the redesign
# The gateway is started as `python -c LAUNCH ENTRY_POINT serve ...`: it says where
# `tollway` was imported from, then runs the entry point its own pyproject.toml names
# (so each revision starts the way its `tollway` script would).
LAUNCH = ('import importlib, sys, tollway; print("tollway imported from", tollway.__file__, '
          'flush=True); m, _, f = sys.argv[1].partition(":"); sys.argv = ["tollway", '
          '*sys.argv[2:]]; sys.exit(getattr(importlib.import_module(m), f)())')
IMPORTED = "tollway imported from "
SETTLE_S = 1.2  # after a run: the ledger's flush_seconds (1.0) and a little more
TOKENS = {"json": 16, "stream": 50}  # the simulator's reply, as in bench/overhead.py


@dataclass(frozen=True)
class Plan:
    repeats: int
    duration: float  # measured seconds per wrk run
    warmup: float  # wrk seconds per target and scenario before measuring
    connections: int = 64


FULL = Plan(repeats=6, duration=2.0, warmup=1.0)
COUNTED = 1000  # requests counted by callgrind, per revision and kind
QUICK = Plan(repeats=2, duration=2.0, warmup=1.0)


@dataclass(frozen=True)
class Target:
    name: str  # "base" or "new"
    server: Server
    src: Path  # where its `tollway` must come from


@dataclass(frozen=True)
class Run:
    repeat: int
    position: int  # 0: this target went first in its repeat
    rps: float
    us_per_req: float  # gateway CPU, run start until idle after it, per request served
    cpu: float  # gateway CPU % during the run
    other: float  # everybody else's CPU % during the run (noise)
    steal: float
    errors: int


@dataclass
class Scenario:
    key: str  # "json" or "stream"
    unit: str  # "request" or "stream"
    body: Path
    runs: dict[str, list[Run]] = field(default_factory=lambda: {"base": [], "new": []})

    def values(self, target: str, metric: str) -> list[float]:
        return [float(getattr(r, metric)) for r in self.runs[target]]

    def ratio_per_repeat(self, metric: str) -> list[float]:
        """new / base within each repeat (both saw the same machine)."""
        return [n / b for n, b in zip(self.values("new", metric), self.values("base", metric),
                                      strict=True) if b]

    def ratio_of_medians(self, metric: str) -> float:
        return (statistics.median(self.values("new", metric))
                / statistics.median(self.values("base", metric)))


# -- the two gateways ------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def describe(rev: str) -> str:
    return git("log", "-1", "--format=%h (%cs: %s)", rev)


def extract(rev: str, into: Path) -> Path:
    """REV's src/, as `git archive REV src | tar -x -C into` does; its src directory."""
    harness.COMMANDS.append(f"git archive {rev} src | tar -x -C {into}")
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def entry_point(pyproject: str) -> str:
    """The `tollway` script's target in a pyproject.toml, e.g. `tollway.cli:main`."""
    ep: str = tomllib.loads(pyproject)["project"]["scripts"]["tollway"]
    return ep


def start(servers: Servers, name: str, sim: Server, ep: str, pythonpath: Path | None
          ) -> Server:
    env = {"PYTHONPATH": str(pythonpath)} if pythonpath else {}
    return harness.start_gateway(servers, name, {"models": harness.sim_models(sim.url)},
                                 launcher=[harness.PY, "-c", LAUNCH, ep], env=env)


def check_source(t: Target) -> str:
    """Where the gateway imported `tollway` from; stop the run unless from `t.src`."""
    line = next((x for x in t.server.tail(100_000).splitlines() if x.startswith(IMPORTED)),
                "")
    got = Path(line.removeprefix(IMPORTED))
    if not line or not got.is_relative_to(t.src):
        sys.exit(f"compare: the {t.name} gateway imported tollway from {got or '?'}, not "
                 f"from {t.src}: it is not running the code it stands for")
    return str(got)


# -- measuring -------------------------------------------------------------------------


def measure(t: Target, sc: Scenario, plan: Plan, rep: int, position: int) -> Run:
    pids = {"gateway": [t.server.pid]}
    a = CpuSnapshot.take(pids)
    r = load.run_wrk(t.server.url + CHAT, sc.body, plan.connections, plan.duration)
    during = CpuSnapshot.take(pids).usage_since(a)
    # The work a request leaves behind (the ledger's next batch) belongs to it too.
    time.sleep(SETTLE_S)
    wait_idle([t.server.pid], within=5.0, quiet=0.005)
    cpu_s = CpuSnapshot.take(pids).seconds_since(a)["gateway"]
    return Run(rep, position, r["rps"], 1e6 * cpu_s / max(r["requests"], 1),
               during["cpu_gateway"], during["cpu_other"], during["cpu_steal"], r["errors"])


def run_repeat(targets: list[Target], sc: Scenario, plan: Plan, rep: int) -> None:
    """One repeat of a scenario: both gateways warmed up, then each measured in turn
    (which goes first alternates between repeats)."""
    for t in targets:
        load.run_wrk(t.server.url + CHAT, sc.body, 16, plan.warmup)
    wait_idle([t.server.pid for t in targets], within=10.0)
    order = targets if rep % 2 == 0 else targets[::-1]
    for position, t in enumerate(order):
        for x in targets:
            x.server.check_alive()
        run = measure(t, sc, plan, rep, position)
        sc.runs[t.name].append(run)
        cli.log(f"{sc.key} #{rep + 1} {t.name:4s} {run.rps:7.0f}/s {run.us_per_req:5.0f} "
                f"µs/{sc.unit} gateway {run.cpu:3.0f}% other {run.other:3.0f}% "
                f"steal {run.steal:3.0f}% errors {run.errors}")


def instructions(kind: str, n: int, pythonpath: Path | None, out: Path) -> int:
    """Instructions callgrind counted for `n` requests of `kind` through the request
    path (`bench/request_path.py`), from REV's src/ when `pythonpath` is given."""
    env = {"PYTHONPATH": str(pythonpath)} if pythonpath else {}
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}", harness.PY, str(ROOT / "bench/request_path.py"),
            kind, str(n)]
    harness.record(argv, env)
    base = {k: v for k, v in os.environ.items() if not k.startswith(harness.NOT_INHERITED)}
    got = subprocess.run(argv, capture_output=True, text=True, check=True,
                         env={**base, **env}, cwd=out.parent)
    line = next(x for x in got.stderr.splitlines() if "Collected :" in x)
    return int(line.rsplit(":", 1)[1].strip().replace(",", ""))


def count_instructions(work: Path, old_src: Path) -> dict[str, dict[str, float]]:
    """Instructions per request, by kind and target: `COUNTED` requests less the
    switching on and off (a run of none), divided by `COUNTED`."""
    got: dict[str, dict[str, float]] = {"json": {}, "stream": {}}
    for name, path in (("base", old_src), ("new", None)):
        fixed = instructions("json", 0, path, work / f"callgrind.{name}.0")
        for kind in got:
            total = instructions(kind, COUNTED, path, work / f"callgrind.{name}.{kind}")
            got[kind][name] = (total - fixed) / COUNTED
            cli.log(f"instructions {kind} {name}: {got[kind][name]:,.0f} per request")
    return got


# -- report ----------------------------------------------------------------------------


def verdict(sc: Scenario) -> str:
    """Equal or lower: the median's ratio, and whether the repeats resolve it."""
    ratio = sc.ratio_of_medians("us_per_req")
    per = sc.ratio_per_repeat("us_per_req")
    if ratio <= 1:
        return (f"met (new / base {ratio:.2f} at the medians"
                + (", lower in every repeat)" if max(per) < 1 else ")"))
    if min(per) > 1:
        return f"**not met** (new / base {ratio:.2f}, higher in every repeat)"
    return (f"**not shown** (new / base {ratio:.2f} at the medians, but the per-repeat "
            f"ratios, {spread(per, '{:.2f}')}, straddle 1: within this run's noise)")


def summary_table(scs: list[Scenario], labels: dict[str, str]) -> str:
    rows = []
    for sc in scs:
        for metric, what in (("us_per_req", f"gateway CPU µs per {sc.unit}"),
                             ("rps", f"{sc.unit}s/s, closed loop")):
            rows.append([what, spread(sc.values("base", metric)),
                         spread(sc.values("new", metric)),
                         f"{sc.ratio_of_medians(metric):.3f}",
                         spread(sc.ratio_per_repeat(metric), "{:.3f}")])
    return report.table(["figure", labels["base"], labels["new"], "new / base, medians",
                         "new / base, per repeat"], rows)


def runs_table(sc: Scenario) -> str:
    rows = [[f"{r.repeat + 1}", name, "first" if r.position == 0 else "second",
             f"{r.rps:,.0f}", f"{r.us_per_req:,.0f}", f"{r.cpu:.0f}", f"{r.other:.0f}",
             f"{r.steal:.0f}", str(r.errors)]
            for rep in range(len(sc.runs["base"]))
            for name in ("base", "new") for r in sc.runs[name] if r.repeat == rep]
    return report.table(["repeat", "target", "went", f"{sc.unit}s/s",
                         f"µs per {sc.unit}", "gateway CPU %", "other CPU %", "steal %",
                         "errors"], rows)


def instructions_table(counted: dict[str, dict[str, float]], labels: dict[str, str]) -> str:
    rows = [[f"instructions per {'request' if kind == 'json' else 'stream'}",
             f"{got['base']:,.0f}", f"{got['new']:,.0f}", f"{got['new'] / got['base']:.3f}"]
            for kind, got in counted.items()]
    return report.table(["figure", labels["base"], labels["new"], "new / base"], rows)


def counted_verdict(kind: str, got: dict[str, float]) -> str:
    ratio = got["new"] / got["base"]
    what = "request" if kind == "json" else "stream"
    return (f"Acceptance, the request path's instructions per {what} equal or lower: "
            + (f"met ({ratio:.3f})" if ratio <= 1 else f"**not met** ({ratio:.3f})") + ".")


def render(plan: Plan, scs: list[Scenario], counted: dict[str, dict[str, float]], base: str,
           same: bool, imported: dict[str, str], work: Path, old: Path) -> str:
    labels = {"base": f"base: {base}", "new": "working tree"}
    self_check = (
        f"src/ is the same at {base} and in the working tree, so this run "
        "compares a commit with itself: the method's self-check. A ratio near 1.00 is "
        "expected; how far the per-repeat ratios stray from 1 is the noise of this "
        "measurement on this machine." if same else
        f"src/ differs between {base} and the working tree.")
    return "\n\n".join([
        report.para(f"""**Method.** Two `tollway serve` processes in front of one
        simulator (`python -m tollway.simulate.server`; replies of {TOKENS['json']}
        tokens for JSON, {TOKENS['stream']} streamed tokens with no delay): *base* runs
        {base}'s src/, extracted with `git archive` into a scratch directory (`$B`) and
        put first on `PYTHONPATH`; *working tree* runs this checkout's src/ through the
        editable install. Same interpreter, same libraries, default settings, no key.
        Each prints where it imported `tollway` from (checked before measuring): base
        from `{imported['base']}`, working tree from `{imported['new']}`. Load is wrk
        (one thread, {plan.connections} keep-alive connections, closed loop,
        {plan.duration:g} s per run, after {plan.warmup:g} s of warm-up per gateway and
        scenario); {plan.repeats} repeats, each with both gateways started afresh (so
        no process's own luck biases every repeat) and running both scenarios, the
        one that goes first alternating. *CPU µs per request* is the gateway process's
        CPU time (`/proc/PID/stat`) from the start of a run until it is idle again
        after it (at least {SETTLE_S:g} s: the ledger's last batch is the run's work),
        divided by the requests wrk completed. Figures are the median [min .. max] over
        the repeats; *new / base, medians* is the ratio of the two medians, *per
        repeat* the ratio within each repeat."""),
        self_check,
        summary_table(scs, labels),
        *(f"Acceptance, CPU per {sc.unit} equal or lower: {verdict(sc)}." for sc in scs),
        "## Instructions: the gateway's own work, counted",
        report.para(f"""CPU time on this machine moves by about ±5 % between runs
        (other processes, the hypervisor, caches), which hides a change of a few per
        cent. Instructions do not move: `bench/request_path.py` calls each revision's
        ASGI app in-process ({COUNTED} JSON requests, then {COUNTED} streams of five
        events), with an upstream that answers at once, so only the gateway's own work
        is there — the edge, the request path and its ledger row — and callgrind
        (`--instr-atstart=no`, switched on after start-up and 200 warm-up requests)
        counts it; a run of none is subtracted (the switching itself). The same count
        comes back on every run to within about 0.3 %."""),
        instructions_table(counted, labels),
        *(counted_verdict(kind, got) for kind, got in counted.items()),
        "## Every run",
        *(f"**{sc.unit.capitalize()}s**\n\n{runs_table(sc)}" for sc in scs),
        "## Commands",
        "Every command the run executed, in order (`$B` is the scratch directory base's "
        "src/ was extracted into, `$W` the run's; the shorter wrk runs are the warm-ups):",
        f"```sh\n{harness.commands({work: '$W', old: '$B'})}\n```",
        f"`$W/new.yaml` (`base.yaml` is the same):\n\n```yaml\n"
        f"{(work / 'new.yaml').read_text().strip()}\n```",
    ])


def headline(scs: list[Scenario], counted: dict[str, dict[str, float]], base: str) -> str:
    parts = [f"gateway CPU per {sc.unit}, working tree / {base}: "
             f"{sc.ratio_of_medians('us_per_req'):.2f} "
             f"({statistics.median(sc.values('new', 'us_per_req')):.0f} vs "
             f"{statistics.median(sc.values('base', 'us_per_req')):.0f} µs; per repeat "
             f"{spread(sc.ratio_per_repeat('us_per_req'), '{:.2f}')}), instructions "
             f"{counted[sc.key]['new'] / counted[sc.key]['base']:.3f}" for sc in scs]
    return "; ".join(parts) + "."


# -- entry -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser(__doc__)
    ap.add_argument("--base", default=BASE, metavar="REV",
                    help="the commit to compare with (default: %(default)s, the last "
                    "before the redesign)")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    base = git("rev-parse", "--short", args.base)
    same = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", args.base, "--",
                           "src"], check=False).returncode == 0
    with tempfile.TemporaryDirectory(prefix="tollway-compare-") as tmp:
        work, old = Path(tmp) / "work", Path(tmp) / "base"
        work.mkdir()
        old_src = extract(args.base, old)
        eps = {"base": entry_point(git("show", f"{args.base}:pyproject.toml")),
               "new": entry_point((ROOT / "pyproject.toml").read_text())}
        with Servers(work) as servers:
            sim = harness.start_simulator(servers)
            scs = [Scenario("json", "request", load.body_file(work, "json", stream=False)),
                   Scenario("stream", "stream", load.body_file(work, "sse", stream=True))]
            imported: dict[str, str] = {}
            for rep in range(plan.repeats):
                # Fresh processes every repeat: a process's own luck (its memory layout,
                # its hash seed, where it was scheduled) must not bias every repeat.
                targets = [Target("base", start(servers, "base", sim, eps["base"], old_src),
                                  old_src),
                           Target("new", start(servers, "new", sim, eps["new"], None),
                                  ROOT / "src")]
                imported = {t.name: harness.shown_path(check_source(t)).replace(str(old),
                                                                                 "$B")
                            for t in targets}
                wait_idle([t.server.pid for t in targets])  # tokenizers load meanwhile
                for sc in scs:
                    harness.sim_config(sim, ttft_ms=0, token_ms=0,
                                       output_tokens=TOKENS[sc.key])
                    run_repeat(targets, sc, plan, rep)
                for t in targets:
                    servers.stop(t.server)
        counted = count_instructions(work, old_src)
        body = render(plan, scs, counted, base, same, imported, work, old)
    report.write(args, title="Gateway CPU against an earlier commit",
                 headline=headline(scs, counted, base), body=body,
                 libraries=("uvicorn", "aiohttp", "uvloop", "httptools"),
                 extra=[("base", describe(args.base)),
                        ("load generator", report.wrk_version())])
    return 0


if __name__ == "__main__":
    sys.exit(main())
