"""The one way the benchmarks start and stop processes (simulators, gateways, proxies,
LiteLLM), wait for them, configure them, and keep every command run so a results file
can print them."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import uvloop
import yaml

T = TypeVar("T")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
CHAT = "/v1/chat/completions"
# The master key of the gateways a run starts (random: it never leaves the run), and
# how the commands show it.
MASTER = "bench-master-" + secrets.token_hex(8)
MASTER_ENV = {"TOLLWAY_MASTER_KEY": MASTER}
MASTER_SHOWN = {"TOLLWAY_MASTER_KEY": "$TOLLWAY_MASTER_KEY"}
# Not passed on to the processes: they would add providers, keys or settings to a
# gateway beyond its config file.
NOT_INHERITED = ("OPENAI_", "ANTHROPIC_", "TOLLWAY_")

# Every command run, in order, for the results file (repeats dropped there).
COMMANDS: list[str] = []


def shown_path(arg: str) -> str:
    """A path in the repository, relative to it (as the commands are typed there)."""
    return os.path.relpath(arg, ROOT) if arg.startswith(str(ROOT)) else arg


def record(argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Keep a command line for the report: paths in the repository relative to it, and
    `env` as it should be shown (a secret as `$NAME`)."""
    prefix = " ".join(f"{k}={v if v.startswith('$') else shlex.quote(shown_path(v))}"
                      for k, v in (env or {}).items())
    COMMANDS.append((prefix + " " if prefix else "") + shlex.join(shown_path(a) for a in argv))


def commands(paths: Mapping[Path, str]) -> str:
    """Every command run, in order, without repeats; each of `paths` (a scratch
    directory) shown as its label (`$W`)."""
    text = "\n".join(dict.fromkeys(COMMANDS))
    for path, label in paths.items():
        text = text.replace(str(path), label)
    return text


# -- processes -------------------------------------------------------------------------


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it if this process dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    """A process a benchmark started: its output goes to `log`."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str  # http://127.0.0.1:PORT when started with --port PORT, else ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")


@dataclass
class Servers:
    """Every process a benchmark starts, each in a directory of its own under `work`
    (its log, and what it writes relative to its working directory, such as a
    gateway's default store), SIGTERMed if we die, and stopped however the run ends
    (`with Servers(work) as servers:`)."""

    work: Path
    started: list[Server] = field(default_factory=list)  # running
    history: list[Server] = field(default_factory=list)  # every one, stopped or not

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None,
              shown: Mapping[str, str] | None = None) -> Server:
        """`shown` is how the report prints `env` (a secret as `$NAME`)."""
        record(argv, env if shown is None else shown)
        cwd = self.work / name
        cwd.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
        log = cwd / "out.log"
        with log.open("wb") as out:  # a file, not a pipe nobody drains
            proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    env={**base, **(env or {})}, preexec_fn=die_with_parent)
        url = f"http://127.0.0.1:{argv[argv.index('--port') + 1]}" if "--port" in argv else ""
        server = Server(name, proc, log, url)
        self.started.append(server)
        self.history.append(server)
        return server

    def stop(self, server: Server, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) one server and wait for it."""
        if server.proc.poll() is None and kill:
            server.proc.kill()
        elif server.proc.poll() is None:
            server.proc.terminate()
        _reap(server)
        self.started.remove(server)

    def stop_all(self) -> None:
        """SIGTERM to all at once, as an operator would (a gateway flushes its ledger on
        the way out), then wait for each, the last started first."""
        for s in reversed(self.started):
            if s.proc.poll() is None:
                s.proc.terminate()
        for s in reversed(self.started):
            _reap(s)
        self.started.clear()

    def __enter__(self) -> Servers:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit_on_signal)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `with` that stops the servers


def _reap(server: Server) -> None:
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=5)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(server: Server, path: str = "/health", timeout: float = 60.0) -> None:
    """Poll GET `path` until it answers 200 (the server has finished starting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.check_alive()
        with contextlib.suppress(OSError), urllib.request.urlopen(server.url + path,
                                                                  timeout=1) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} not ready at {server.url}{path} after {timeout:g}s")


def wait_listening(server: Server, timeout: float = 30.0) -> None:
    """For servers with no GET route to poll: wait until the port accepts."""
    port = int(server.url.rsplit(":", 1)[1])
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


# -- the simulator and the gateway -----------------------------------------------------


def tollway_argv() -> list[str]:
    script = Path(PY).parent / "tollway"
    return [str(script)] if script.exists() else [PY, "-m", "tollway.cli"]


def start_simulator(servers: Servers, name: str = "simulator",
                    port: int | None = None) -> Server:
    """`tollway simulate` (one Python process), ready."""
    # Replies pinned to 16 tokens, as the throughput numbers have always been measured.
    sim = servers.start(name, [PY, "-m", "tollway.simulate.server", "--port",
                               str(port or free_port()), "--output-tokens", "16"])
    wait_ready(sim, "/_sim/stats")
    return sim


def sim_config(sim: Server, **cfg: Any) -> None:
    """Change how the simulator answers (it is sent with urllib; the report shows the
    equivalent curl)."""
    body = json.dumps(cfg)
    COMMANDS.append(f"curl -X PUT {sim.url}/_sim/config -H 'Content-Type: "
                    f"application/json' -d '{body}'")
    http("PUT", sim.url + "/_sim/config", body.encode())


def sim_deployment(sim_url: str, model: str = "sim-model", **fields: Any) -> dict[str, Any]:
    """A deployment of `model` on the simulator, as an OpenAI-compatible upstream."""
    return {"provider": "openai", "model": model, "api_base": f"{sim_url}/v1",
            "api_key": "sim", **fields}


def sim_models(sim_url: str, **alias: Any) -> dict[str, Any]:
    """The `models:` section the throughput benchmarks share: the alias is the
    upstream's model name, so direct, floor, gateway and LiteLLM get the same body.
    `alias` adds settings to it (e.g. `cache`)."""
    return {"sim-model": {"deployments": [sim_deployment(sim_url)], **alias}}


def write_config(work: Path, name: str, config: Mapping[str, Any]) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def start_gateway(servers: Servers, name: str, config: Mapping[str, Any], *,
                  port: int | None = None, args: Sequence[str] = (), master: bool = False,
                  launcher: Sequence[str] | None = None,
                  env: Mapping[str, str] | None = None, ready: bool = True) -> Server:
    """`tollway serve` with `config` (written to `$W/NAME.yaml`), ready unless told
    not to wait. `master`: with this run's master key; `launcher`: the argv that stands
    for `tollway` (another interpreter or source tree)."""
    argv = [*(launcher or tollway_argv()), "serve", "--port", str(port or free_port()),
            "--config", str(write_config(servers.work, name, config)), *args]
    secret = MASTER_ENV if master else {}
    gw = servers.start(name, argv, {**(env or {}), **secret},
                       {**(env or {}), **(MASTER_SHOWN if master else {})})
    if ready:
        wait_ready(gw)
    return gw


def create_key(gateway: Server, body: Mapping[str, Any]) -> str:
    """A virtual key from the admin API (under this run's master key)."""
    text = json.dumps(body)
    COMMANDS.append(f"curl -X POST {gateway.url}/admin/keys -H 'Authorization: Bearer "
                    f"$TOLLWAY_MASTER_KEY' -H 'Content-Type: application/json' -d '{text}'")
    key: str = json.loads(http("POST", gateway.url + "/admin/keys", text.encode(),
                               MASTER))["key"]
    return key


def simulator_and_gateway(servers: Servers, config: Callable[[str], dict[str, Any]],
                          master: bool = False) -> tuple[Server, Server]:
    """The simulator and a gateway configured by `config(simulator_url)`, both ready."""
    sim = start_simulator(servers)
    return sim, start_gateway(servers, "gateway", config(sim.url), master=master)


def log_problems(servers: Servers) -> dict[str, tuple[int, int]]:
    """Per process: (tracebacks, ERROR log lines) in its output, shutdown included."""
    out = {}
    for s in servers.history:
        text = s.log.read_text(errors="replace") if s.log.exists() else ""
        out[s.name] = (text.count("Traceback"),
                       sum(" ERROR " in line or " CRITICAL " in line
                           for line in text.splitlines()))
    return out


def run_checked(servers: Servers, main: Coroutine[Any, Any, T]) -> T:
    """Run a benchmark's `main` on uvloop; if it fails, say first which of its
    processes died, with the tail of their output."""
    try:
        return uvloop.run(main)
    except BaseException:
        for s in servers.started:
            if s.proc.poll() is not None:
                print(f"{s.name} exited {s.proc.returncode}:\n{s.tail()}", file=sys.stderr,
                      flush=True)
        raise
