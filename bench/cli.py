"""What every benchmark's command line shares: the flags `--quick` and `--out` (a
benchmark adds its own to the parser), the progress log on stderr, and the command as
it was run, for its results file."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import harness

NAME = Path(sys.argv[0]).stem  # the benchmark: bench/NAME.py
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"{NAME} [{time.monotonic() - T0:4.0f} s] {msg}", file=sys.stderr, flush=True)


def parser(doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a short smoke run, written to bench/results/NAME-quick.md")
    ap.add_argument("--out", type=Path, help="the results file (default: "
                    "docs/benchmarks/NAME.md, or bench/results/NAME-quick.md with --quick)")
    return ap


def command() -> str:
    """The command line as run: `.venv/bin/python bench/NAME.py ARGS`."""
    script = str(Path(sys.argv[0]).resolve())
    return shlex.join([harness.shown_path(harness.PY), harness.shown_path(script),
                       *sys.argv[1:]])
