"""`GET /console/requests/{id}?at=`: the ledger row of one of the caller's own requests.

A stream the console stopped never gets its cost trailer: the browser hung up, the
gateway cancelled the upstream call and priced what had arrived (`Pipeline.finish`).
The console names its requests (`x-request-id`) and asks here what that one cost. The
row is looked for among those that arrived around `at` (the console's estimate of the
gateway's clock when it sent the request), waiting briefly for the request to finish
and its row to be written; the answer is `{"data": row}`, or `{"data": null}` if it
never came. The master reads any row, a key its own lineage's, an open gateway's
caller rows of no key.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import msgspec

from tollway.accounting.rows import LedgerRow
from tollway.errors import InvalidRequest
from tollway.policy.auth import Caller
from tollway.server.asgi import Headers, Receive, Scope, edge, query
from tollway.server.console_session import ConsoleApi

AROUND_S = 60.0  # how far the row's arrival may be from `at` (clock skew, a slow start)
WAIT_S, POLL_S = 5.0, 0.1  # how long a request still finishing is waited for


class ConsoleRequest(ConsoleApi):
    allow = "GET"

    async def answer(self, scope: Scope, receive: Receive, headers: Headers) -> Any:
        e = edge(scope)
        caller = await self.gateway.authenticate(e.api_key, Caller(), e.session)
        at = _epoch(query(scope, ("at",)).get("at"))
        row = await self._find(scope["path_params"]["id"], at, caller)
        return {"data": None if row is None else msgspec.to_builtins(row)}

    async def _find(self, request_id: str, at: float, caller: Caller) -> LedgerRow | None:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:
            await self.gateway.ledger.flush()
            for row in await self.gateway.store.ledger.rows(at - AROUND_S, at + AROUND_S):
                if row.request_id == request_id and _owns(caller, row):
                    return row
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(POLL_S)  # the request is still finishing: no event to await


def _owns(caller: Caller, row: LedgerRow) -> bool:
    if caller.master:
        return True
    if caller.key is not None:
        return row.key_lineage == caller.key.lineage
    return row.key_id is None


def _epoch(text: str | None) -> float:
    try:
        at = float(text or "")
    except ValueError:
        at = math.nan
    if not math.isfinite(at):
        raise InvalidRequest("at: the time the request was sent, in epoch seconds",
                             param="at")
    return at
