"""Run `tollway simulate` as a subprocess for tests.

    with start_simulator(ttft_ms=5) as sim:
        client = openai.AsyncOpenAI(base_url=sim.openai_base, api_key="x")
        sim.config(next_faults=["429"])
        assert sim.stats()["faults_injected"]["429"] == 1

The control calls (`config`, `stats`, `reset`) are synchronous urllib calls to the
simulator's /_sim endpoints, so they work from sync and async tests alike.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

_START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimulatorError(RuntimeError):
    pass


@dataclass
class SimHandle:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    _closed: bool = field(default=False, repr=False)

    @property
    def openai_base(self) -> str:
        """base_url for openai.OpenAI / AsyncOpenAI."""
        return self.url + "/v1"

    base_url = openai_base

    @property
    def anthropic_base(self) -> str:
        """base_url for anthropic.Anthropic / AsyncAnthropic."""
        return self.url

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def config(self, **changes: Any) -> dict[str, Any]:
        """PUT the changes (none: just GET); returns the resulting config."""
        if not changes:
            return dict(self.request("GET", "/_sim/config"))
        return dict(self.request("PUT", "/_sim/config", changes))

    def stats(self) -> dict[str, Any]:
        return dict(self.request("GET", "/_sim/stats"))

    def reset(self) -> None:
        self.request("POST", "/_sim/reset")

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 5.0) -> dict[str, Any]:
        """Poll stats until `predicate(stats)` holds; returns those stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; stats: {stats}")
            time.sleep(0.01)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    stop = close

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _flags(options: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        out.append("--" + key.replace("_", "-"))
        if value is not True:
            out.append(str(value))
    return out


def _launch(port: int, flags: list[str]) -> SimHandle:
    cmd = [sys.executable, "-m", "tollway.simulate.server", "--port", str(port), *flags]
    # stderr goes to a file, not a pipe: nobody drains a pipe during the tests, and a
    # full one would block the simulator.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return _wait_ready(SimHandle(f"http://127.0.0.1:{port}", port, proc), err)


def _wait_ready(sim: SimHandle, err: IO[bytes]) -> SimHandle:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if sim.proc.poll() is not None:
            err.seek(0)
            raise SimulatorError(f"simulator exited with {sim.proc.returncode}: "
                                 f"{err.read().decode(errors='replace')}")
        try:
            sim.stats()
            return sim
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.02)
    sim.close()
    raise SimulatorError(f"simulator not ready at {sim.url} after {_START_TIMEOUT}s")


def start_simulator(**options: Any) -> SimHandle:
    """Start a simulator on a free port and wait until it answers. Options are its CLI
    flags with underscores (ttft_ms=5, rate_429=0.1, output_tokens=32, seed=1); replies
    are 16 tokens unless output_tokens says otherwise (None: the natural length).
    Use as a context manager, or call `.close()`."""
    # Tests expect replies of a known length: 16 tokens unless they say otherwise
    # (output_tokens=None: as long as the prompt suggests).
    flags = _flags({"output_tokens": 16, **options})
    for attempt in range(3):
        try:
            return _launch(free_port(), flags)
        except SimulatorError as e:
            # Another process may have taken the port between our probe and the bind.
            if "address already in use" not in str(e).lower() or attempt == 2:
                raise
    raise AssertionError("unreachable")
