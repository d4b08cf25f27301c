"""One line of a batch, answered: the request through the same path as an interactive
one (`Pipeline.chat` / `Pipeline.embed` via its dialect), as the batch's owner, never
streamed, and `finish`ed once like every request — its own ledger row, carrying the
batch's id, under a row id fixed by the batch and the line, so a line run again after
a crash is recorded (and settled on budgets) once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from tollway.accounting.settlement import Aborted, Answered, Failed, Outcome
from tollway.errors import TollwayError
from tollway.gateway import Gateway
from tollway.gateway.call import Asks, Call
from tollway.policy.auth import Caller


@dataclass(frozen=True, slots=True)
class LineResult:
    status: int
    body: bytes  # the response (or the error) as the endpoint would have returned it
    cost_usd: float


def line_row_id(batch_id: str, index: int) -> str:
    return f"row_{batch_id}_{index}"


async def answer(gateway: Gateway, dialect: Any, caller: Caller, batch_id: str, index: int,
                 body: bytes) -> LineResult:
    """The line's response; a refusal or an error is its result, not an exception."""
    call = Call(f"{batch_id}-{index}", caller=caller, asks=Asks(),
                row_id=line_row_id(batch_id, index), batch=batch_id, prepaid=True)
    answered = None
    outcome: Outcome = Aborted()
    pipeline = gateway.pipeline  # the configuration it began under, to its end
    try:
        server = gateway.config.server
        if dialect.bind is None:
            req = dialect.parse(body, server)
        else:
            req, dialect = await dialect.bind(gateway, call, body)
        answered = await dialect.handle(pipeline)(call, req)
        assert answered.reply is not None  # a batch line never streams
        out = dialect.reply(answered.reply)
        if dialect.kept is not None:
            await dialect.kept(out)
        outcome = Answered(answered)
        status = 200
    except TollwayError as err:
        err = gateway.scrub(err)
        outcome = Failed(err, answered)
        status, out = err.status, dialect.error(err)
    finally:
        spent = await pipeline.finish(call, outcome)
    return LineResult(status, out, spent.usd)


class Owner(msgspec.Struct, frozen=True):
    """Whom a batch's lines are charged to, as kept with the batch (a restart rebuilds
    the caller from it: the key is looked up again, so a key revoked since stops it)."""

    key_id: str | None = None
    master: bool = False
    user: str | None = None
    feature: str | None = None

    @staticmethod
    def of(caller: Caller) -> Owner:
        return Owner(caller.key.id if caller.key is not None else None, caller.master,
                     caller.user, caller.feature)

    async def caller(self, gateway: Gateway) -> Caller:
        edge = Caller(master=self.master, user=self.user, feature=self.feature)
        if self.key_id is None:
            return edge
        rec = await gateway.store.keys.by_id(self.key_id)
        if rec is None:
            raise LookupError(f"the batch's key {self.key_id} no longer exists")
        why = rec.refusal(gateway.clock())
        if why is not None:
            raise LookupError(f"the batch's key {rec.hint} ({rec.id}) {why}")
        feature = self.feature or (rec.features[0] if rec.features else None)
        return msgspec.structs.replace(edge, key=rec, team=rec.team, feature=feature)
