"""SDK clients a test made, closed when it ends (an autouse fixture in conftest).

A client left to the garbage collector closes its sockets later, possibly a file
descriptor a newer connection reuses by then: that connection's reply never comes.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

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
