"""What every benchmark needs: start/stop servers, read CPU time and peak memory from
/proc (psutil is not installed), run wrk and the constant-rate generator, and keep the
exact commands used so the report can print them."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")

# Every command line run, in order, for the report (duplicates dropped there).
COMMANDS: list[str] = []


def record(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    shown = [os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in argv]
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    line = (prefix + " " if prefix else "") + shlex.join(shown)
    COMMANDS.append(line)
    return line


# -- processes -------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{tail}")


@dataclass
class Servers:
    """Started servers, stopped in reverse order however the run ends."""

    log_dir: Path
    started: list[Server] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              shown: dict[str, str] | None = None) -> Server:
        """`shown` is what the report prints for `env` (a secret as `$NAME`)."""
        record(argv, env if shown is None else shown)
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env={**os.environ, **(env or {})})
        server = Server(name, proc, log)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for s in reversed(self.started):
            if s.proc.poll() is None:
                s.proc.terminate()
                try:
                    s.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    s.proc.kill()
                    s.proc.wait(timeout=5)
        self.started.clear()


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_ready(server: Server, url: str, timeout: float = 30.0) -> None:
    """Poll `url` until it answers 200 (the server has finished starting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.check_alive()
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} not ready at {url} after {timeout:g}s")


def wait_port(server: Server, port: int, timeout: float = 30.0) -> None:
    """For servers with no GET route to poll: wait until the port accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.check_alive()
        if not port_free(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} not listening on {port} after {timeout:g}s")


def http(method: str, url: str, body: bytes | None = None, key: str | None = None) -> bytes:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        data: bytes = r.read()
        return data


# -- /proc -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def machine_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine, all cores, from /proc/stat.
    Steal is time the hypervisor gave our vCPUs to someone else: noise we cannot see
    in any process."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (
            int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq) / TICK, steal / TICK


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


@dataclass
class CpuMeter:
    """CPU used by the given processes, by the load generator, and by everybody else
    (other work on a shared machine is noise we want to see, not guess)."""

    pids: dict[str, int]
    t0: float
    cpu0: dict[str, float]
    machine0: tuple[float, float]

    @classmethod
    def start(cls, pids: dict[str, int]) -> CpuMeter:
        return cls(pids, time.perf_counter(), {n: cpu_seconds(p) for n, p in pids.items()},
                   machine_seconds())

    def read(self, loadgen_cpu: float) -> dict[str, float]:
        """CPU % (100 = one core) per process over the interval, plus loadgen and other."""
        wall = time.perf_counter() - self.t0
        used = {n: cpu_seconds(p) - self.cpu0[n] for n, p in self.pids.items()}
        busy, steal = (b - a for a, b in zip(self.machine0, machine_seconds(), strict=True))
        out = {f"cpu_{n}": 100 * s / wall for n, s in used.items()}
        out |= {f"cpu_s_{n}": s for n, s in used.items()}
        out["cpu_loadgen"] = 100 * loadgen_cpu / wall
        out["cpu_other"] = max(0.0, 100 * (busy - sum(used.values()) - loadgen_cpu) / wall)
        out["cpu_steal"] = 100 * steal / wall
        out["wall_s"] = wall
        return out


# -- load generators -----------------------------------------------------------------------


def child_cpu_seconds() -> float:
    """CPU of finished children we waited for (how wrk and loadgen are measured)."""
    r = os.times()
    return r.children_user + r.children_system


@dataclass(frozen=True)
class Auth:
    """A bearer key for the load generators, passed in $BENCH_AUTH; the report shows
    `shown` (e.g. `$KEY`) in its place."""

    secret: str
    shown: str

    def env(self) -> tuple[dict[str, str], dict[str, str]]:
        """(for the process, for the report)"""
        return {"BENCH_AUTH": self.secret}, {"BENCH_AUTH": self.shown}


def auth_env(auth: Auth | None) -> tuple[dict[str, str], dict[str, str]]:
    return auth.env() if auth else ({}, {})


def run_wrk(url: str, body: Path, connections: int, duration: float,
            auth: Auth | None = None) -> dict[str, Any]:
    """Closed loop: `connections` keep-alive connections, each sends as soon as it has
    its answer. One wrk thread is plenty here and leaves the cores to the servers."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s",
            "-s", str(BENCH / "post.lua"), url]
    secret, shown = auth_env(auth)
    env = {"BENCH_BODY": str(body)}
    record(argv, env | shown)
    cpu0 = child_cpu_seconds()
    out = subprocess.run(argv, env={**os.environ, **env, **secret}, capture_output=True,
                         text=True, timeout=duration + 30, check=True).stdout
    cpu = child_cpu_seconds() - cpu0
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    r: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    secs = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / secs
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    r["lat_p50_ms"], r["lat_p99_ms"] = r["p50_us"] / 1000, r["p99_us"] / 1000
    r["loadgen_cpu_s"] = cpu
    return r


def run_loadgen(url: str, body: Path, rate: float, duration: float, warmup: float,
                timeout: float = 15.0, auth: Auth | None = None) -> dict[str, Any]:
    """Open loop at a constant rate, latency from the intended send time."""
    argv = [PY, str(BENCH / "loadgen.py"), url, "--body", str(body), "--rate", f"{rate:g}",
            "--duration", f"{duration:g}", "--warmup", f"{warmup:g}", "--timeout",
            f"{timeout:g}"]
    secret, shown = auth_env(auth)
    record(argv, shown)
    cpu0 = child_cpu_seconds()
    out = subprocess.run(argv, env={**os.environ, **secret}, capture_output=True, text=True,
                         check=True, timeout=warmup + duration + 2 * timeout + 30).stdout
    r: dict[str, Any] = json.loads(out)
    r["loadgen_cpu_s"] = child_cpu_seconds() - cpu0
    return r


def sse_frames(url: str, body: bytes, auth: Auth | None = None) -> tuple[int, int]:
    """How many `data:` frames one streamed reply has, and its body's bytes (to turn
    wrk's bytes received into chunks/s)."""
    reply = http("POST", url, body, auth.secret if auth else None)
    return reply.count(b"data:"), len(reply)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sim_models_yaml(upstream_port: int, alias_extra: str = "") -> str:
    """The `models:` section every benchmarked gateway shares: the alias is the
    upstream's model name, so direct, floor, gateway and LiteLLM get the same body.
    `alias_extra` is more YAML for the alias (indented four spaces)."""
    return f"""models:
  sim-model:
    deployments:
      - provider: openai
        model: sim-model
        api_base: http://127.0.0.1:{upstream_port}/v1
        api_key: sim
{alias_extra}"""


def simulator_and_gateway(servers: Servers, work: Path,
                          config: Callable[[str], dict[str, Any]]) -> tuple[str, str]:
    """`tollway simulate` and a `tollway serve` configured by `config(simulator_url)`,
    both ready; their URLs."""
    import yaml  # (not needed by the benchmarks that only drive wrk)

    sim_port, gw_port = free_port(), free_port()
    sim = servers.start("simulator", [*tollway_argv(), "simulate", "--port", str(sim_port)])
    sim_url = f"http://127.0.0.1:{sim_port}"
    wait_ready(sim, sim_url + "/_sim/stats")
    cfg = work / "tollway.yaml"
    cfg.write_text(yaml.safe_dump(config(sim_url)))
    gw = servers.start("gateway", [*tollway_argv(), "serve", "--port", str(gw_port),
                                   "--config", str(cfg)])
    gw_url = f"http://127.0.0.1:{gw_port}"
    wait_ready(gw, gw_url + "/health")
    return sim_url, gw_url


def tollway_argv() -> list[str]:
    script = Path(sys.executable).parent / "tollway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tollway.cli"]


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it if this process dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def write_section(path: Path, section: str, begin: str, end: str) -> None:
    """Replace one benchmark's section of the doc (between its `begin` and `end`
    markers), or append it; the rest stays as it is."""
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
