"""`make bench`: install the load tools if missing, then run every benchmark in turn and
print how long each took (the whole run is meant to fit in 15 minutes on 2 cores).

Arguments are passed to each benchmark (e.g. `bench/run.py --quick`). Add a benchmark
by appending its script to BENCHMARKS. LiteLLM is installed into bench/.litellm-venv by
bench/overhead.py the first time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# overhead.py rewrites docs/benchmarks.md whole; the others replace their own section of
# it, so it runs first.
BENCHMARKS = ["overhead.py", "tokens.py", "reliability.py", "workers.py",
              "cache_precision.py", "cache.py", "guards.py", "history.py"]
# What the full run passes on top, to stay within its time: the shortest inbound flood
# that still spans a whole sliding minute, 3 s wrk runs for the fleet, and the dev
# texts' embeddings from an earlier run of the same model on the same texts (each
# section names its command).
FULL_ARGS = {"reliability.py": ["--flood-seconds", "65"], "workers.py": ["--duration", "3"],
             "cache_precision.py": ["--reuse-embeddings", "--sample-if-cold", "3000"]}


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
    args = sys.argv[1:]
    took: list[tuple[str, float]] = []
    t0 = time.monotonic()
    for script in BENCHMARKS:
        extra = [] if "--quick" in args else FULL_ARGS.get(script, [])
        print(f"bench: {script} {' '.join(extra)}".rstrip(), flush=True)
        t = time.monotonic()
        rc = subprocess.run([sys.executable, str(BENCH / script), *args, *extra],
                            check=False).returncode
        took.append((script, time.monotonic() - t))
        if rc != 0:
            print(f"bench: {script} failed ({rc})", flush=True)
            return rc
    for script, secs in took:
        print(f"bench: {script:20s} {secs / 60:5.1f} min", flush=True)
    print(f"bench: whole run {(time.monotonic() - t0) / 60:5.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
