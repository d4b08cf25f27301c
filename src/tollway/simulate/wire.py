"""What the two wire dialects share: the request context, stream steps, errors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tollway.simulate.limits import LimitView
from tollway.simulate.plan import ChoicePlan, SimRequest

SYSTEM_FINGERPRINT = "fp_7f3c2a9e1b"


class BadRequest(Exception):
    """The request is invalid; answered with a 400 in the dialect's error format."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True, frozen=True)
class ReplyContext:
    id: str
    created: int
    model: str


@dataclass(slots=True, frozen=True)
class Step:
    """Bytes written at once after waiting `delay` seconds; `tokens` they carry."""

    data: bytes
    tokens: int
    delay: float


@dataclass(slots=True, frozen=True)
class ErrorSpec:
    type: str
    message: str
    code: str | None = None
    param: str | None = None


class Dialect(Protocol):
    endpoint: str
    id_prefix: str
    request_id_header: str

    def parse(self, body: Any) -> SimRequest: ...

    def error_body(self, status: int, spec: ErrorSpec, request_id: str) -> bytes: ...

    def error_spec(self, status: int, retry_after: float) -> ErrorSpec: ...

    def model_not_found(self, model: str) -> ErrorSpec: ...

    def limit_headers(self, view: LimitView, wall_now: float) -> dict[str, str]: ...

    def reply_body(self, ctx: ReplyContext, req: SimRequest, plans: list[ChoicePlan]) -> bytes:
        ...

    def stream_steps(self, ctx: ReplyContext, req: SimRequest, plans: list[ChoicePlan],
                     ttft: float, per_token: float) -> list[Step]: ...


def piece_tokens(plan: ChoicePlan, i: int) -> int:
    return 1 if plan.weights is None else plan.weights[i]


def token_rows(plans: Sequence[ChoicePlan]) -> Iterator[list[tuple[int, ChoicePlan]]]:
    """Token position by position, the (choice index, plan) pairs that have a piece
    there: choices stream side by side, as OpenAI interleaves them."""
    longest = max((len(p.pieces) for p in plans), default=0)
    for i in range(longest):
        yield [(c, p) for c, p in enumerate(plans) if i < len(p.pieces)]


def build_steps(opening: bytes, opening_tokens: int, rows: list[tuple[bytes, int]],
                closing: bytes, ttft: float, per_token: float) -> list[Step]:
    """The stream's timeline: the opening frames ride with the first token after `ttft`,
    later tokens follow `per_token` apart, and the closing frames go right after the last
    token. The last step is always the closing one."""
    if not rows:
        return [Step(opening, opening_tokens, ttft), Step(closing, 0, 0.0)]
    first_data, first_tokens = rows[0]
    steps = [Step(opening + first_data, opening_tokens + first_tokens, ttft)]
    steps += [Step(data, tokens, per_token) for data, tokens in rows[1:]]
    steps.append(Step(closing, 0, 0.0))
    return steps


def sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


def sse_event(event: bytes, data: bytes) -> bytes:
    return b"event: " + event + b"\ndata: " + data + b"\n\n"
