"""A redis-server of a test's own, on a free port: to stop, restart empty or flush it
(never the machine's shared Redis, whose database 0 other tests use)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers.gateway import free_port


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it, empty (no persistence), and wait until it answers."""
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.cli("ping") != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)  # waiting for a port to open: no event to await

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart_empty(self) -> None:
        self.stop()
        self.start()

    def cli(self, *args: str) -> str:
        """One redis-cli command against it; its output."""
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                              check=False, text=True).stdout.strip()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A started RedisServer, stopped afterwards."""
    r = RedisServer()
    r.start()
    try:
        yield r
    finally:
        r.stop()
