"""A benchmark's results file, `docs/benchmarks/NAME.md`, written whole by the benchmark
and by nothing else: its title, the exact command, the machine and code it ran on, a
one-line headline (which bench/run.py copies into the index, docs/benchmarks.md), then
the benchmark's own text. Also the markdown pieces they share: median [min .. max],
tables, paragraphs."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cli
import harness

DOCS = harness.ROOT / "docs" / "benchmarks"
RESULTS = harness.BENCH / "results"  # quick runs and raw data (git-ignored)
HEADLINE = "**In short:** "
LOAD_AT_START = os.getloadavg()


def results_path(name: str, quick: bool) -> Path:
    return RESULTS / f"{name}-quick.md" if quick else DOCS / f"{name}.md"


# -- the machine -------------------------------------------------------------------------


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
    except OSError:
        return "not installed"
    return (out.stdout or out.stderr).split("Copyright")[0].strip()


def code_version() -> str:
    """The commit measured, and whether src/ had uncommitted changes (others edit it)."""
    try:
        head = subprocess.run(["git", "-C", str(harness.ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(harness.ROOT), "status", "--porcelain", "--",
                                "src"], capture_output=True, text=True, timeout=10
                               ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "no commit") + (" + uncommitted changes in src/" if dirty else "")


def loop_seconds() -> float:
    """A crude single-core speed figure, to compare this machine with another."""
    t = time.perf_counter()
    n = 0
    for i in range(10_000_000):
        n += i
    return time.perf_counter() - t


def machine(libraries: Sequence[str], extra: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    libs = ", ".join(f"{p} {version(p)}" for p in libraries)
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("code", code_version()),
        ("CPU", f"{cpu_model()}, {os.cpu_count()} cores visible"),
        ("memory", f"{mem_kib / 1024 / 1024:.1f} GiB"),
        ("kernel", platform.release()),
        ("Python", platform.python_version()),
        ("CPU speed", f"a 10M-iteration Python for-loop takes {loop_seconds():.2f} s"),
        *([("libraries", libs)] if libs else []),
        *extra,
        ("load average at start", " ".join(f"{x:.2f}" for x in LOAD_AT_START)),
        ("run time", took(time.monotonic() - cli.T0)),
    ]


def took(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# -- markdown ----------------------------------------------------------------------------


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """Median and [min .. max] over the repeats, e.g. "4,512 [4,401 .. 4,630]" (".."
    because a range of negative numbers with a dash reads badly); a constant stands alone."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "-"
    lo, med, hi = (fmt.format(v) for v in (min(vals), statistics.median(vals), max(vals)))
    return med if lo == hi else f"{med} [{lo} .. {hi}]"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: bool = True) -> str:
    """A markdown table; numeric columns (all but the first) are right-aligned."""
    rule = "--:" if numeric else "---"
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i == 0 else rule for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def para(text: str) -> str:
    """A paragraph written as a triple-quoted string, refilled to 88 columns."""
    return textwrap.fill(" ".join(text.split()), width=88, break_on_hyphens=False,
                         break_long_words=False)


# -- the results file --------------------------------------------------------------------


def write(args: argparse.Namespace, *, title: str, headline: str, body: str,
          libraries: Sequence[str] = (), extra: Sequence[tuple[str, str]] = ()) -> Path:
    """Write this benchmark's results file whole (`--out`, or the default for `--quick`):
    `libraries` are the distributions whose versions matter to its figures, `extra`
    more rows for the machine table (e.g. the load generator)."""
    out: Path = args.out or results_path(cli.NAME, args.quick)
    head = [f"# {title}",
            f"Written by `bench/{cli.NAME}.py` (`make bench` runs it); do not edit by hand. "
            "The command:",
            f"```sh\n{cli.command()}\n```",
            table(["", ""], machine(libraries, extra), numeric=False),
            HEADLINE + headline]
    if args.quick:
        head.append("> **Quick mode** (`--quick`): a short smoke run; do not compare its "
                    "figures.")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join([*head, body.strip("\n")]) + "\n")
    shown = out.relative_to(harness.ROOT) if out.is_relative_to(harness.ROOT) else out
    cli.log(f"wrote {shown}")
    return out


@dataclass(frozen=True)
class Summary:
    """What the index shows of a results file."""

    title: str
    headline: str
    machine: dict[str, str]  # the machine table's rows (date, code, run time, ...)


def summary(path: Path) -> Summary:
    lines = path.read_text().splitlines()
    title = next((x.removeprefix("# ") for x in lines if x.startswith("# ")), path.stem)
    headline = next((x.removeprefix(HEADLINE) for x in lines if x.startswith(HEADLINE)), "")
    machine = {}
    for x in lines:  # the first table: | key | value |
        cells = [c.strip() for c in x.strip().strip("|").split("|")]
        if x.startswith("| ") and len(cells) == 2 and cells[0]:
            machine.setdefault(cells[0], cells[1])
        elif machine and not x.startswith("|"):
            break
    return Summary(title, headline, machine)


def save_raw(data: Any) -> Path:
    """Everything a run measured, as JSON, under bench/results/ (git-ignored)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{cli.NAME}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=1, default=str))
    return path
