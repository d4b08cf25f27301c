"""What a store failure means for the request in hand, decided in one place.

Every failed store call is logged and counted by part (`tollway_store_errors`); then
the caller's part either fails open (the request goes on without it: rate limits fall
back to this process, a summary is written afresh, a turn goes unstored) or closed
(503 with Retry-After: keys, a conversation's history, budgets unless configured
open). A `TollwayError` is a decision, not a failure: it passes through.

Every store call of the request path passes here, so here it gets its span when
tracing is on (`tollway.store.<part>`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tollway import tracing
from tollway.errors import TollwayError, Unavailable

log = logging.getLogger("tollway")
T = TypeVar("T")
RETRY_AFTER = 5.0  # seconds a caller is asked to wait when a store is down


# How a part is named in the log ("rate-limit store unreachable ...").
_NAMES = {"limits": "rate-limit", "budgets": "budget", "keys": "key",
          "conversations": "conversation"}

class Outages:
    def __init__(self, count: Callable[[str], None]) -> None:
        self._count = count  # the metric, by part

    def failed(self, part: str, doing: str, e: BaseException) -> None:
        self._count(part)
        log.warning("%s store unreachable (%s): %s", _NAMES.get(part, part), doing, e)

    async def open(self, part: str, doing: str, op: Awaitable[T]) -> T | None:
        """The call's result, or None when the store failed (logged and counted)."""
        if tracing.ON:
            op = tracing.traced(f"tollway.store.{part}", op)
        try:
            return await op
        except TollwayError:
            raise
        except Exception as e:
            self.failed(part, doing, e)
            return None

    async def closed(self, part: str, refusal: str, op: Awaitable[T]) -> T:
        """The call's result; when the store failed, a 503 that says `refusal`."""
        if tracing.ON:
            op = tracing.traced(f"tollway.store.{part}", op)
        try:
            return await op
        except TollwayError:
            raise
        except Exception as e:
            self.failed(part, "refused", e)
            raise Unavailable(refusal, retry_after=RETRY_AFTER) from e
