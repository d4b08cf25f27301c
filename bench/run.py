"""`make bench`: install the load tools if missing, run every benchmark in turn (each
writes its own results file, docs/benchmarks/NAME.md), then write the index,
docs/benchmarks.md, from those files. The whole run takes about 25 minutes on 2 cores
(the sum of the run times the results files record).

    .venv/bin/python bench/run.py            # every benchmark, then the index
    .venv/bin/python bench/run.py --quick    # smoke runs -> bench/results/
    .venv/bin/python bench/run.py --index    # only the index, from the results files

Add a benchmark by appending its script to BENCHMARKS. LiteLLM is installed into
bench/.litellm-venv by bench/overhead.py the first time.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import report
from harness import BENCH, ROOT

BENCHMARKS = ["overhead.py", "compare.py", "tokens.py", "reliability.py", "faults.py",
              "workers.py", "cache_precision.py", "cache.py", "guards.py", "history.py",
              "routes.py", "complexity.py", "cross_cache.py", "chatbot.py", "batches.py",
              "dashboard.py", "library.py"]
# What the full run passes on top, to stay within its time: the shortest inbound flood
# that still spans a whole sliding minute, 3 s wrk runs for the fleet, and the dev
# texts' embeddings from an earlier run of the same model on the same texts, and the
# provider-batch path once the gateway has it (each results file names its command).
FULL_ARGS = {"reliability.py": ["--flood-seconds", "65"], "workers.py": ["--duration", "3"],
             "cache_precision.py": ["--reuse-embeddings", "--sample-if-cold", "3000"],
             "batches.py": ["--upstream-batch"]}
INDEX = ROOT / "docs" / "benchmarks.md"

METHOD = """\
Written by `make bench` (`bench/run.py`), which runs every benchmark below in turn and
then writes this index from their results files; do not edit by hand. Each benchmark
writes its own file, which starts with the exact command, the machine and the code it
measured; run one alone with `.venv/bin/python bench/NAME.py` (`--quick` for a smoke
run, written to `bench/results/`), and `.venv/bin/python bench/run.py --index` rewrites
this page from the files as they are.

What holds for all of them:

- The machine has 2 shared cores and is noisy (other work, a hypervisor's steal), so
  what is compared is measured side by side in one run: the targets take turns within
  each repeat, in a rotated or alternating order, so drift hits them alike, and ratios
  are taken within a repeat.
- Figures are the median with [min .. max] over the repeats; latencies are percentiles
  of every request of a run.
- CPU is read from `/proc/PID/stat` (100 % = one core) for each process, and for the
  whole machine from `/proc/stat`; *µs per request* (a process's CPU time over the
  requests it served) is the figure that carries over to another machine.
- Load comes from `wrk` (closed loop: each connection sends again as soon as it has its
  answer) or `bench/loadgen.py` (open loop at a constant rate, each latency counted from
  the request's intended send time); upstreams are `tollway simulate` unless a file
  says otherwise.
- Load generator, proxies and upstreams share the cores over loopback: absolute
  numbers are lower than on a dedicated box; compare ratios and µs per request."""


def apt_install(package: str) -> None:
    """Debian package install; refresh the index once if the first try fails."""
    cmd = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(cmd, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(cmd, check=True)


def ensure_tools() -> None:
    for tool in ("wrk", "valgrind"):  # valgrind: compare.py counts instructions with it
        if shutil.which(tool) is None:
            print(f"bench: installing {tool} (Debian package)", flush=True)
            apt_install(tool)


def write_index(quick: bool) -> Path:
    """The index: method notes for all, then each results file's title (a link), its
    headline, and when and how long it ran."""
    out = report.RESULTS / "index-quick.md" if quick else INDEX
    rows = []
    for script in BENCHMARKS:
        path = report.results_path(Path(script).stem, quick)
        if not path.exists():
            rows.append(f"| `bench/{script}` | (no results yet) | | |")
            continue
        s = report.summary(path)
        link = Path(path).relative_to(out.parent) if path.is_relative_to(out.parent) else path
        when = (f"{s.machine['date']}, code {s.machine.get('code', '?')}"
                if "date" in s.machine else "-")
        rows.append(f"| [{s.title}]({link}) | {s.headline} | {when} | "
                    f"{s.machine.get('run time', '-')} |")
    text = "\n\n".join([
        "# Benchmarks", METHOD, "## Results",
        "| benchmark | in short | measured | run time |\n|---|---|---|--:|\n"
        + "\n".join(rows)])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run of each benchmark")
    ap.add_argument("--index", action="store_true", help="only rewrite the index")
    args = ap.parse_args()
    if args.index:
        print(f"bench: wrote {write_index(args.quick).relative_to(ROOT)}", flush=True)
        return 0
    ensure_tools()
    took: list[tuple[str, float]] = []
    t0 = time.monotonic()
    failed = ""
    for script in BENCHMARKS:
        argv = ["--quick"] if args.quick else FULL_ARGS.get(script, [])
        print(f"bench: {script} {' '.join(argv)}".rstrip(), flush=True)
        t = time.monotonic()
        rc = subprocess.run([sys.executable, str(BENCH / script), *argv], check=False).returncode
        took.append((script, time.monotonic() - t))
        if rc != 0:
            failed = f"bench: {script} failed ({rc})"
            break
    for script, secs in took:
        print(f"bench: {script:20s} {secs / 60:5.1f} min", flush=True)
    print(f"bench: whole run {(time.monotonic() - t0) / 60:5.1f} min", flush=True)
    print(f"bench: wrote {write_index(args.quick).relative_to(ROOT)}", flush=True)
    if failed:
        print(failed, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
