"""Who a request is for, set around the code that sends it: `with gw.attribute(user=…,
feature=…)`. A context variable, read when a request is sent, so it follows the code
(threads, asyncio tasks — each copies the context it was started in) rather than a
client object, and turned into the headers the gateway already reads for budgets, rate
limits and the ledger (`server/asgi.Edge`). A header the request sets itself wins.

The team is not here: it is a key's (`policy/auth.py`), so it cannot be claimed by a
header — a client made with that key (`gw.openai(api_key="tw-…")`) is counted to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace

from tollway.server.asgi import Headers


@dataclass(frozen=True, slots=True)
class Attribution:
    user: str | None = None  # x-tollway-user: the end user's budgets and rate limits
    feature: str | None = None  # x-tollway-feature
    conversation: str | None = None  # x-tollway-conversation-id: a label (budgets, ledger)
    tier: str | None = None  # x-tollway-tier


_HEADERS = {"user": b"x-tollway-user", "feature": b"x-tollway-feature",
            "conversation": b"x-tollway-conversation-id", "tier": b"x-tollway-tier"}
_current: ContextVar[Attribution | None] = ContextVar("tollway_attribution", default=None)


def current() -> Attribution | None:
    return _current.get()


@contextmanager
def attribute(*, user: str | None = None, feature: str | None = None,
              conversation: str | None = None, tier: str | None = None
              ) -> Iterator[Attribution]:
    """Attribute the requests sent inside the block. Nested blocks refine the outer one:
    a field given here replaces the outer's, the others are kept."""
    outer = _current.get() or Attribution()
    given = {k: v for k, v in (("user", user), ("feature", feature),
                               ("conversation", conversation), ("tier", tier))
             if v is not None}
    now = replace(outer, **given)
    token = _current.set(now)
    try:
        yield now
    finally:
        _current.reset(token)


def headers_for(present: set[bytes]) -> Headers:
    """The current attribution's headers, but those the request already has."""
    a = _current.get()
    if a is None:
        return []
    out: Headers = []
    for f in fields(Attribution):
        value = getattr(a, f.name)
        name = _HEADERS[f.name]
        if value is not None and name not in present:
            out.append((name, value.encode()))
    return out
