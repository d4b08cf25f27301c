"""Markdown for docs/benchmarks.md: the machine, medians with their spread, tables."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from importlib.metadata import version


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
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
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


def machine() -> list[tuple[str, str]]:
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    libs = ", ".join(f"{p} {version(p)}" for p in ("uvicorn", "starlette", "aiohttp", "uvloop",
                                                    "httptools", "orjson", "msgspec"))
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("code", code_version()),
        ("CPU", f"{cpu_model()}, {os.cpu_count()} cores visible"),
        ("memory", f"{mem_kib / 1024 / 1024:.1f} GiB"),
        ("kernel", platform.release()),
        ("Python", platform.python_version()),
        ("CPU speed", f"a 10M-iteration Python for-loop takes {loop_seconds():.2f} s"),
        ("libraries", libs),
        ("load generator", f"{wrk_version()}; bench/loadgen.py (aiohttp + uvloop)"),
        ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]


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


def machine_table() -> str:
    return table(["", ""], [(k, v) for k, v in machine()], numeric=False)
