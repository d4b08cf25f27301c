"""Slow and greedy clients (issue 17, item 11): headers and bodies that trickle in are
answered 408 and the connection freed; a client address past its connection cap gets
503; a busy port fails before the banner says "serving"."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest

from tests.conftest import gateway_config
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.sim import SimHandle

HEADER_S, BODY_S, PER_IP = 0.5, 0.5, 4


@pytest.fixture(scope="module")
def sgw(sim: SimHandle) -> Iterator[GatewayHandle]:
    cfg = gateway_config(sim.url)
    cfg["server"] = {**cfg["server"], "header_timeout_seconds": HEADER_S,  # type: ignore[dict-item]
                     "body_timeout_seconds": BODY_S, "max_connections_per_ip": PER_IP}
    handle = start_gateway(cfg)
    try:
        yield handle
    finally:
        handle.stop()


async def answer_of(reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
    """The status and JSON body of the one response a connection gets before closing."""
    raw = await asyncio.wait_for(reader.read(), timeout=10)  # to EOF: it must close
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


async def test_headers_that_never_finish_get_a_408_and_the_connection_closes(
        sgw: GatewayHandle) -> None:
    for sent in (b"", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", sgw.port)
        writer.write(sent)  # nothing, or half the headers, then silence
        status, body = await answer_of(reader)
        writer.close()
        assert status == 408
        assert "server.header_timeout_seconds" in str(body["error"])


async def test_a_body_that_trickles_gets_a_408(sgw: GatewayHandle) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sgw.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mod")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408")


async def test_a_client_past_its_connection_cap_gets_503(sgw: GatewayHandle) -> None:
    held = [await asyncio.open_connection("127.0.0.1", sgw.port) for _ in range(PER_IP)]
    reader, writer = await asyncio.open_connection("127.0.0.1", sgw.port)
    status, body = await answer_of(reader)
    writer.close()
    assert status == 503 and "server.max_connections_per_ip" in str(body["error"])
    for _, w in held:
        w.close()
        await w.wait_closed()
    # With those gone (their slots freed as they close), the address is served again.
    for _ in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", sgw.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        if got.startswith(b"HTTP/1.1 200"):
            break
        await asyncio.sleep(0.02)  # the server's side of the closes is still landing
    else:
        pytest.fail("the address stayed refused after its connections closed")


def test_a_busy_port_fails_before_saying_it_serves() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        got = subprocess.run([sys.executable, "-m", "tollway.cli", "serve", "--port",
                              str(port)], capture_output=True, text=True, timeout=60)
    assert got.returncode != 0
    assert "serving on" not in got.stdout
    assert f"cannot listen on 127.0.0.1:{port}" in got.stderr
