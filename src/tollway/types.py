"""Canonical types: the OpenAI chat-completions shape, typed.

A request is parsed once at the edge (`wire/`) into `ChatRequest`; providers translate
it to their upstream and answer with `Reply` (JSON) or `ReplyStream` (SSE chunks) in
OpenAI's shape. Fields Tollway does not interpret are kept in `ChatRequest.extra` and
forwarded untouched to OpenAI-compatible upstreams, so new OpenAI parameters work
before we learn about them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class FunctionCall(msgspec.Struct, omit_defaults=True):
    name: str
    arguments: str


class ToolCall(msgspec.Struct):
    """(`type` is always written: OpenAI requires it on a message's tool calls.)"""

    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class Message(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    role: Role
    # A string, or a list of content parts ({"type": "text", "text": ...}, images, ...).
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    function_call: FunctionCall | None = None

    def text(self) -> str:
        """The plain text of this message (text parts joined; images ignored)."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")


class StreamOptions(msgspec.Struct, omit_defaults=True):
    include_usage: bool = False


class NativeRequest(msgspec.Struct):
    """A Responses API request as OpenAI takes it, kept beside its chat view for a
    deployment that speaks the Responses API natively (`providers/openai_responses.py`):
    `body` is the caller's, with the conversation it continues laid out in `input`
    (never `previous_response_id`: the gateway keeps the conversation) and `store`
    false; `only` names the parameter only a native deployment can serve (a hosted tool,
    a hosted tool's call item), or is None when a translated one can serve it too."""

    body: dict[str, Any]
    only: str | None = None


class ChatRequest(msgspec.Struct, omit_defaults=True, kw_only=True):
    model: str
    messages: list[Message]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    # Top-level fields we do not interpret; forwarded to OpenAI-compatible upstreams.
    extra: dict[str, Any] = {}
    # The Responses API body, for a native deployment (POST /v1/responses only).
    native: NativeRequest | None = None

    def output_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else (
            self.max_tokens
        )

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


@dataclass(slots=True, eq=False)
class EmbeddingRequest:
    """An OpenAI embeddings request (POST /v1/embeddings), parsed by
    `wire/openai_embeddings.py`. `input` is always a list — one text or one token array
    is a list of one, which upstreams answer the same — of texts, or of token arrays
    when `tokens` (ids in the model's tokenizer: cl100k_base for OpenAI's)."""

    model: str
    input: list[str] | list[list[int]]
    tokens: bool = False
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    # Top-level fields we do not interpret; forwarded to OpenAI-compatible upstreams.
    extra: dict[str, Any] = field(default_factory=dict)


class Usage(msgspec.Struct, omit_defaults=True):
    """Token usage as the provider reported it. prompt_tokens includes cached_tokens
    (read from a prompt cache) and cache_write_tokens (written to one: Anthropic);
    completion_tokens includes reasoning_tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens or self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens or self.cache_write_tokens:
            details: dict[str, int] = {"cached_tokens": self.cached_tokens}
            if self.cache_write_tokens:
                details["cache_write_tokens"] = self.cache_write_tokens
            out["prompt_tokens_details"] = details
        if self.reasoning_tokens:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out

    @classmethod
    def from_openai(cls, u: dict[str, Any] | None) -> Usage | None:
        if not u:
            return None
        ptd = u.get("prompt_tokens_details") or {}
        ctd = u.get("completion_tokens_details") or {}
        p, c = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
        return cls(
            prompt_tokens=p,
            completion_tokens=c,
            total_tokens=int(u.get("total_tokens") or p + c),
            cached_tokens=int(ptd.get("cached_tokens") or 0),
            reasoning_tokens=int(ctd.get("reasoning_tokens") or 0),
            cache_write_tokens=int(ptd.get("cache_write_tokens") or 0),
        )

    @classmethod
    def from_responses(cls, u: Any) -> Usage | None:
        """A Response object's usage (input/output tokens)."""
        if not isinstance(u, dict):
            return None
        itd = u.get("input_tokens_details") or {}
        otd = u.get("output_tokens_details") or {}
        p, c = int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0)
        return cls(prompt_tokens=p, completion_tokens=c,
                   total_tokens=int(u.get("total_tokens") or p + c),
                   cached_tokens=int(itd.get("cached_tokens") or 0),
                   reasoning_tokens=int(otd.get("reasoning_tokens") or 0))


@dataclass(slots=True)
class Reply:
    """A complete (non-streaming) answer: an OpenAI `chat.completion` object."""

    body: dict[str, Any]
    model: str
    usage: Usage | None
    # The upstream's x-ratelimit-* / anthropic-ratelimit-* headers, lower-cased (pacing).
    ratelimit: dict[str, str] = field(default_factory=dict)
    # A native Responses deployment's Response object, as it answered (`body` is its
    # chat view): what the Responses dialect returns and stores.
    native: dict[str, Any] | None = None
    # Answered through the provider's batch API: priced at its batch rates.
    batch: bool = False


# One OpenAI `chat.completion.chunk` object, and a stream of them.
Chunk = dict[str, Any]
ChunkStream = AsyncGenerator[Chunk, None]
# Complete OpenAI SSE events (b"data: {...}\n\n"), one or more per item, never [DONE].
# Streams travel as bytes so an OpenAI-compatible upstream's events are forwarded
# without being parsed and re-encoded: only the usage and error events are parsed.
FrameStream = AsyncGenerator[bytes, None]


UpstreamDialect = Literal["openai", "anthropic", "responses"]  # an upstream stream's wire format


@dataclass(slots=True)
class Flight:
    """An upstream stream's connection, for billing one we closed before its end (the
    client left; `accounting/inflight.py`): when the request went out and its first
    event came (monotonic seconds), the first read (in the upstream's own wire format)
    and the bytes read in all; once closed early, when, and what had arrived unread:
    in the HTTP client's buffer (`unread`, in the upstream's wire format) and in the
    OS's (`queued`, a byte count)."""

    sent: float
    first: float
    first_read: bytes = b""
    read_bytes: int = 0
    closed: float | None = None  # None: read to its end
    unread: bytes = b""
    queued: int = 0
    dialect: UpstreamDialect = "openai"


@dataclass(slots=True)
class ReplyStream:
    """A streaming answer. `frames` yields OpenAI SSE events; when it ends, `usage`
    holds what the provider reported (providers always ask for it upstream). The
    usage-only event is forwarded only when `emit_usage` is set (the gateway sets it
    when the client asked with stream_options.include_usage)."""

    frames: FrameStream
    model: str
    usage: Usage | None = None
    emit_usage: bool = False
    # What the upstream sent, as forwarded: counted only when no usage arrives (the
    # client left, the stream broke) to bill what was generated.
    received: list[bytes] = field(default_factory=list)
    # The upstream's x-ratelimit-* / anthropic-ratelimit-* headers, lower-cased (pacing).
    ratelimit: dict[str, str] = field(default_factory=dict)
    # The prompt's tokens as the upstream told them when the stream began (Anthropic's
    # message_start does), long before its final usage; None when it did not.
    input_tokens: int | None = None
    # The upstream connection (HTTP providers), and the most output the request allows
    # (max tokens x n, set by the pipeline): what billing an abandoned stream needs.
    flight: Flight | None = None
    max_output: int | None = None


@dataclass(slots=True, frozen=True, eq=False)
class Deployment:
    """One concrete upstream model behind an alias. Built once per configuration and
    compared by identity, so providers can cache per-deployment request parts cheaply."""

    provider: str
    model: str
    api_base: str | None = None
    api_key: str | None = None
    # Per attempt, seconds (config/models.Timeouts says what each bounds).
    connect_timeout: float = 5.0
    first_token_timeout: float = 60.0
    idle_timeout: float = 30.0
    total_timeout: float = 600.0
    headers: tuple[tuple[str, str], ...] = ()
    weight: float = 1.0  # share of its priority group's traffic
    priority: int = 0  # lower first; a higher one takes over when the lower are unusable
    # Sent POST /v1/responses requests natively (config: `responses`), not translated.
    responses_native: bool = False
    # A batch's lines go to the provider's own batch API (config: `batches`).
    batch_api: bool = False
    # Anthropic: add prompt-cache breakpoints (providers/anthropic_cache) to what we send.
    prompt_cache: bool = True


@dataclass(slots=True)
class Answer:
    """What one deployment answered: a full reply or a stream, never both."""

    deployment: Deployment
    reply: Reply | None = None
    stream: ReplyStream | None = None
    # A finished stream as one chat.completion, assembled once for whoever needs it
    # (the schema check, the output PII log, the cache, the conversation store):
    # `wire.sse.body_of`.
    assembled: dict[str, Any] | None = None

    @property
    def model(self) -> str:
        return self.deployment.model
