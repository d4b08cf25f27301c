"""SDK clients a test made, closed when it ends (an autouse fixture in conftest).

A client left to the garbage collector closes its sockets later, possibly a file
descriptor a newer connection reuses by then: that connection's reply never comes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import aiohttp
import openai


class _Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)
_open: list[_Closable] = []


def track(client: C) -> C:
    _open.append(client)
    return client


async def close_all() -> None:
    while _open:
        await _open.pop().close()


def openai_client(base_url: str, key: str) -> openai.AsyncOpenAI:
    """A tracked AsyncOpenAI that does not retry (the gateway retries; tests count)."""
    return track(openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0))


async def abandon_stream(url: str, body: dict[str, Any], headers: dict[str, str],
                         events: int) -> None:
    """POST a streaming request and drop the connection after `events` events
    (`data: {...}` lines), the way a closed browser tab does."""
    async with aiohttp.ClientSession() as s:
        resp = await s.post(url, json=body, headers=headers)
        assert resp.status == 200
        seen = 0
        async for line in resp.content:
            seen += line.startswith(b"data: {")
            if seen == events:
                break
        resp.connection.transport.abort()  # type: ignore[union-attr]
        resp.close()

async def status_of(request: Awaitable[object]) -> int:
    """The HTTP status a request got (200 once the SDK has its answer)."""
    try:
        await request
        return 200
    except openai.APIStatusError as e:
        return e.status_code


async def past_503s(send: Callable[[], Awaitable[int]], every: float = 0.5,
                    deadline_s: float = 20) -> tuple[int, int]:
    """`send()` (a request, its status) again every `every` seconds while it gets 503 (a
    store being reconnected or rebuilt): the status it got then, and how many 503s."""
    deadline, refused = time.monotonic() + deadline_s, 0
    while (status := await send()) == 503:
        refused += 1
        assert time.monotonic() < deadline, f"still 503 after {deadline_s}s"
        await asyncio.sleep(every)  # another process's state: nothing to await
    return status, refused
