"""`make bench`: install the load tools if missing, then run every benchmark in turn.

Arguments are passed to each benchmark (e.g. `bench/run.py --quick`). Add a benchmark
by appending its script to BENCHMARKS.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# overhead.py rewrites docs/benchmarks.md whole; the others replace their own section of
# it, so it runs first.
BENCHMARKS = ["overhead.py", "tokens.py", "reliability.py", "workers.py",
              "cache_precision.py", "cache.py", "guards.py"]


def apt_install(package: str) -> None:
    """Debian package install; refresh the index once if the first try fails."""
    cmd = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(cmd, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(cmd, check=True)


def ensure_tools() -> None:
    if shutil.which("wrk") is None:
        print("bench: installing wrk (Debian package)", flush=True)
        apt_install("wrk")


def main() -> int:
    ensure_tools()
    for script in BENCHMARKS:
        print(f"bench: {script}", flush=True)
        rc = subprocess.run([sys.executable, str(BENCH / script), *sys.argv[1:]],
                            check=False).returncode
        if rc != 0:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
