"""Run `tollway serve` as a real subprocess on a free port, for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GatewayHandle:
    url: str  # http://127.0.0.1:PORT
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return (self.workdir / "gateway.log").read_text(errors="replace")

    def metrics(self) -> str:
        """GET /metrics: the Prometheus text."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as r:
            return str(r.read().decode())


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path | None = None,
              deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = log.read_text(errors="replace") if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode}:\n{out}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)  # polling for the port to open: there is no event to await
    raise TimeoutError(f"{url} not ready within {deadline_s}s")


def start_gateway(config: dict[str, Any] | None = None, *, env: dict[str, str] | None = None,
                  args: list[str] | None = None, workdir: Path | None = None) -> GatewayHandle:
    """Start a gateway with `config` (None: no file, the embedded default)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="tollway-gw-"))
    port = free_port()
    cmd = [sys.executable, "-m", "tollway.cli", "serve", "--port", str(port)]
    if config is not None:
        cfg_path = workdir / "tollway.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
        cmd += ["--config", str(cfg_path)]
    cmd += args or []
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("OPENAI_", "ANTHROPIC_", "TOLLWAY_"))}
    full_env.update(env or {})
    log = workdir / "gateway.log"
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, log)
    except BaseException:
        proc.kill()
        raise
    return GatewayHandle(url=url, port=port, proc=proc, workdir=workdir)


@contextmanager
def fleet(config: dict[str, Any], n: int = 3, *, env: dict[str, str] | None = None
          ) -> Iterator[list[GatewayHandle]]:
    """`n` gateways on one configuration (a shared store: a fleet), stopped afterwards."""
    handles: list[GatewayHandle] = []
    try:
        for _ in range(n):
            handles.append(start_gateway(config, env=env))
        yield handles
    finally:
        for h in handles:
            h.stop()
