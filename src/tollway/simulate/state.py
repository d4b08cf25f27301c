"""The simulator's live configuration and counters."""

from __future__ import annotations

import dataclasses
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

import msgspec

FaultKind = Literal["429", "500", "503", "hang", "reset", "drop_stream", "bad_json",
                    "stall_stream"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

Rate = Annotated[float, msgspec.Meta(ge=0, le=1)]
Millis = Annotated[float, msgspec.Meta(ge=0, le=3_600_000)]


class SimConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Everything `PUT /_sim/config` can change. Fault rates are probabilities of
    mutually exclusive outcomes (one draw per request), so they must sum to at most 1."""

    ttft_ms: Millis = 0.0
    token_ms: Millis = 0.0
    # Pins every answer's length (capped by the request's max tokens); None: each
    # answer as long as its prompt suggests (`length.py`).
    output_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    rate_429: Rate = 0.0
    rate_500: Rate = 0.0
    rate_503: Rate = 0.0
    rate_hang: Rate = 0.0
    rate_reset: Rate = 0.0
    rate_drop_stream: Rate = 0.0
    # A model that ignores response_format: the reply is plain text, not the JSON asked.
    rate_bad_json: Rate = 0.0
    # A stream that goes silent after drop_after_tokens tokens (half by default) and
    # stays open until the caller leaves; a hang on a JSON request.
    rate_stall_stream: Rate = 0.0
    retry_after: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    seed: int = 0
    # When set, requests must present this key (Bearer or x-api-key) or get a 401.
    require_key: str | None = None
    # Faults forced on the next requests, in order, before the rates are consulted.
    next_faults: list[FaultKind] = []
    # A misbehaving upstream that overruns the request's max_tokens (as hidden reasoning
    # or a provider bug would): replies are output_tokens long regardless.
    ignore_max_tokens: bool = False
    # drop_stream cuts (stall_stream stops) the stream after this many tokens (default:
    # half the reply).
    drop_after_tokens: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # A provider's rate limit for our key, per sliding minute: answers carry the
    # provider's rate-limit headers, and a request over the limit gets a 429.
    rpm_limit: Annotated[int, msgspec.Meta(ge=1)] | None = None
    tpm_limit: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # What GET /v1/models lists (any model name is accepted regardless, except by a
    # batch line: `models.py`).
    models: list[str] = msgspec.field(
        default_factory=lambda: ["sim-small", "sim-large", "gpt-4o-mini", "claude-haiku-4-5"])
    # The batch APIs (`batches.py`); off, their routes and /v1/files answer 404, as a
    # compatible server without batches does. A batch takes its settings when created:
    # its lines are answered evenly over batch_delay_s; batch_error_rate of them fail
    # with a 500; what is not done batch_expiry_s after creation expires.
    batches: bool = True
    batch_delay_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 0.2
    batch_error_rate: Rate = 0.0
    batch_expiry_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 86_400.0

    def __post_init__(self) -> None:
        if sum(self.rates()) > 1:
            raise ValueError("fault rates must sum to at most 1")

    def rates(self) -> tuple[float, ...]:
        """Per-kind rates, in FAULT_KINDS order."""
        return (self.rate_429, self.rate_500, self.rate_503, self.rate_hang, self.rate_reset,
                self.rate_drop_stream, self.rate_bad_json, self.rate_stall_stream)

    def merged(self, patch: dict[str, Any]) -> SimConfig:
        """A new config with `patch`'s fields replaced; raises msgspec.ValidationError."""
        return msgspec.convert(msgspec.to_builtins(self) | patch, SimConfig)


class RecordedRequest(msgspec.Struct):
    endpoint: str
    headers: dict[str, str]
    body: Any
    at: float


# Never echo credentials back through /_sim/stats.
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})


def _zero_faults() -> dict[str, int]:
    return dict.fromkeys(FAULT_KINDS, 0)


@dataclass(slots=True)
class ModelUsage:
    """One model's answered requests and their tokens, as its usage reported them:
    prompt_tokens is the whole prompt, cached_tokens the part read from the prompt
    cache, cache_write_tokens the part written to it (Anthropic), completion_tokens what
    was actually sent (a stream cut short counts what went out)."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: ModelUsage) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.cached_tokens += other.cached_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.completion_tokens += other.completion_tokens


@dataclass(slots=True)
class BatchCounts:
    """Batches created (both providers) and their lines: submitted, then by how each
    ended."""

    created: int = 0
    lines: int = 0
    succeeded: int = 0
    errored: int = 0
    expired: int = 0
    canceled: int = 0


@dataclass(slots=True)
class Stats:
    requests: int = 0
    requests_by_endpoint: dict[str, int] = field(default_factory=dict)
    # By the body's "model": which deployment got the traffic.
    requests_by_model: dict[str, int] = field(default_factory=dict)
    # Refused with a 429 for being over rpm_limit / tpm_limit (not the injected 429s).
    rate_limited: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    # The caller went away before its stream finished.
    streams_cancelled: int = 0
    # The caller went away before its answer (streamed or not) was complete.
    requests_cancelled: int = 0
    tokens_generated: int = 0
    faults_injected: dict[str, int] = field(default_factory=_zero_faults)
    last_cancel_at: float | None = None
    recent_requests: deque[RecordedRequest] = field(default_factory=lambda: deque(maxlen=50))
    by_model: dict[str, ModelUsage] = field(default_factory=dict)
    # Batch lines are no requests of their own: counted here, and their usage apart
    # from by_model, so that a replay can price it at batch rates.
    batches: BatchCounts = field(default_factory=BatchCounts)
    batch_by_model: dict[str, ModelUsage] = field(default_factory=dict)

    def count(self, endpoint: str) -> None:
        self.requests += 1
        self.requests_by_endpoint[endpoint] = self.requests_by_endpoint.get(endpoint, 0) + 1

    def record(self, endpoint: str, headers: Any, body: Any) -> None:
        """Count the request and keep its body and headers (minus credentials)."""
        self.count(endpoint)
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str):
            self.requests_by_model[model] = self.requests_by_model.get(model, 0) + 1
        kept = {k.lower(): v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS}
        self.recent_requests.append(RecordedRequest(endpoint, kept, body, time.time()))

    def model(self, name: str) -> ModelUsage:
        usage = self.by_model.get(name)
        if usage is None:
            usage = self.by_model[name] = ModelUsage()
        return usage

    def batch_model(self, name: str) -> ModelUsage:
        return self.batch_by_model.setdefault(name, ModelUsage())

    def generated(self, model: str, tokens: int) -> None:
        self.tokens_generated += tokens
        self.model(model).completion_tokens += tokens

    def cancelled(self, *, stream_open: bool) -> None:
        self.requests_cancelled += 1
        if stream_open:
            self.streams_cancelled += 1
        self.last_cancel_at = time.time()

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "requests_by_endpoint": dict(self.requests_by_endpoint),
            "requests_by_model": dict(self.requests_by_model),
            "rate_limited": self.rate_limited,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "streams_cancelled": self.streams_cancelled,
            "requests_cancelled": self.requests_cancelled,
            "tokens_generated": self.tokens_generated,
            "faults_injected": dict(self.faults_injected),
            "last_cancel_at": self.last_cancel_at,
            "recent_requests": list(self.recent_requests),
            "by_model": {m: dataclasses.asdict(u) for m, u in self.by_model.items()},
            "batches": dataclasses.asdict(self.batches),
            "batch_by_model": {m: dataclasses.asdict(u)
                               for m, u in self.batch_by_model.items()},
        }


class FaultPicker:
    """Chooses each request's fault: the queued `next_faults` first, then one seeded
    random draw against the rates."""

    def __init__(self, config: SimConfig) -> None:
        self.queue: deque[FaultKind] = deque(config.next_faults)
        self._rng = random.Random(config.seed)
        self._rates = config.rates()
        self._any = any(self._rates)

    def pick(self) -> FaultKind | None:
        if self.queue:
            return self.queue.popleft()
        if not self._any:
            return None
        r = self._rng.random()
        for kind, rate in zip(FAULT_KINDS, self._rates, strict=True):
            if r < rate:
                return kind
            r -= rate
        return None
