"""CPU time and memory of processes and of the whole machine, read from /proc (psutil is
not installed). 100 % CPU = one core."""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces): field 3 onwards."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def cpu_of(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds of each process still there (a process gone meanwhile is left out)."""
    out = {}
    for p in pids:
        with contextlib.suppress(OSError):
            out[p] = cpu_seconds(p)
    return out


def machine_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine, all cores, from /proc/stat.
    Steal is time the hypervisor gave our vCPUs to someone else: noise we cannot see
    in any process."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (
            int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq) / TICK, steal / TICK


def child_cpu_seconds() -> float:
    """CPU of the finished children we waited for (how wrk and loadgen are measured)."""
    r = os.times()
    return r.children_user + r.children_system


def tree(root: int) -> list[int]:
    """`root` and all its descendants (a `--workers N` serve: the supervisor, its
    workers and multiprocessing's resource tracker)."""
    kids: dict[int, list[int]] = defaultdict(list)
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError):
                kids[int(_stat_fields(int(d))[1])].append(int(d))
    out = [root]
    for pid in out:
        out.extend(kids.get(pid, []))
    return out


def named(comm: str) -> list[int]:
    """Every process whose command name is `comm` (e.g. all `postgres` backends)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{d}/comm") as f:
                if f.read().strip() == comm:
                    out.append(int(d))
    return out


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def reset_peak_rss(pid: int) -> None:
    """Restart VmHWM from the current RSS (Linux >= 4.0), so a later read is the peak
    since now; if not allowed, VmHWM stays the peak since the process started."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def status_kib(pid: int, key: str) -> int:
    """A memory line of /proc/PID/status (VmHWM = peak resident set, VmRSS = now)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def wait_idle(pids: Sequence[int], within: float = 20.0, quiet: float = 0.01) -> None:
    """Until the processes used under `quiet` s of CPU in 0.5 s (a gateway loads its
    tokenizers in the background after it starts answering), or `within` s passed."""
    deadline = time.monotonic() + within
    last = sum(cpu_of(pids).values())
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(cpu_of(pids).values())
        if now - last < quiet:
            return
        last = now


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds of groups of processes, of the whole machine and of our finished
    children (the load generator), at one moment. Two snapshots give each group's
    share over the interval, the load generator's, and everybody else's: other work on
    a shared machine is noise we want to see, not guess."""

    t: float
    cpu: dict[str, dict[int, float]]  # group -> pid -> CPU seconds
    machine: tuple[float, float]  # (busy, steal) seconds, all cores
    children: float

    @classmethod
    def take(cls, groups: Mapping[str, Sequence[int]]) -> CpuSnapshot:
        return cls(time.perf_counter(), {g: cpu_of(p) for g, p in groups.items()},
                   machine_seconds(), child_cpu_seconds())

    def seconds_since(self, a: CpuSnapshot) -> dict[str, float]:
        """CPU seconds per group from `a` to here; a process new since `a` counts from
        zero (a PostgreSQL backend started meanwhile)."""
        return {g: sum(c - a.cpu.get(g, {}).get(p, 0.0) for p, c in now.items())
                for g, now in self.cpu.items()}

    def usage_since(self, a: CpuSnapshot) -> dict[str, float]:
        """Over the interval from `a`: `cpu_GROUP` (%) and `cpu_s_GROUP` (seconds) per
        group, and the load generator's, the machine's busy, everybody else's and the
        hypervisor's steal, in %."""
        wall = self.t - a.t
        used = self.seconds_since(a)
        busy, steal = (y - x for x, y in zip(a.machine, self.machine, strict=True))
        loadgen = self.children - a.children
        out = {f"cpu_{g}": 100 * s / wall for g, s in used.items()}
        out |= {f"cpu_s_{g}": s for g, s in used.items()}
        out["cpu_loadgen"] = 100 * loadgen / wall
        out["cpu_busy"] = 100 * busy / wall
        out["cpu_other"] = max(0.0, 100 * (busy - sum(used.values()) - loadgen) / wall)
        out["cpu_steal"] = 100 * steal / wall
        out["wall_s"] = wall
        return out
