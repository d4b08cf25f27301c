"""What every provider offers, and how upstream failures become Tollway errors."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import orjson

from tollway.errors import (
    InvalidRequest,
    RateLimited,
    TollwayError,
    Unauthorized,
    UpstreamError,
)
from tollway.types import ChatRequest, Deployment, EmbeddingRequest, Reply, ReplyStream


class Provider(Protocol):
    name: str

    async def complete(self, req: ChatRequest, dep: Deployment) -> Reply:
        """A full answer. Raises TollwayError subclasses on failure."""
        ...

    async def stream(self, req: ChatRequest, dep: Deployment) -> ReplyStream:
        """Returns once the upstream accepted the request and its first event arrived
        (so failures before the first byte raise here, while they can still be retried)."""
        ...

    async def embed(self, req: EmbeddingRequest, dep: Deployment) -> Reply:
        """Embeddings, as OpenAI's `list` of `embedding` objects. Routes send only
        models that embed (gateway/routes.py), so a chat-only provider just refuses."""
        ...

    async def close(self) -> None:
        """Let go of what the provider holds (threads, models); the transport is its
        owner's to close."""
        ...


@dataclass(frozen=True, slots=True)
class LineResult:
    """What a provider's batch answered for one line: its response's status and body,
    or no status when it ended without answering it (expired, cancelled, failed)."""

    status: int | None
    body: dict[str, Any]


@runtime_checkable
class BatchesApi(Protocol):
    """A provider with a batch API (OpenAI's, Anthropic's): lines answered within its
    window, at its batch price."""

    def batch_line(self, req: ChatRequest | EmbeddingRequest, dep: Deployment
                   ) -> tuple[str, bytes]:
        """The endpoint a line goes to and its body, as the provider's batch wants it."""
        ...

    async def run_batch(self, dep: Deployment, endpoint: str,
                        lines: Sequence[tuple[str, bytes]], poll_s: float
                        ) -> dict[str, LineResult]:
        """Send the lines (custom id, body), wait for the batch to end: each line's
        result by custom id."""
        ...

    def batch_reply(self, body: dict[str, Any], dep: Deployment) -> Reply:
        """A line's answer as a `Reply` (OpenAI's shape), marked `batch`."""
        ...


@runtime_checkable
class CountsTokens(Protocol):
    """A provider that counts a prompt's tokens itself (Anthropic's count_tokens)."""

    async def count_tokens(self, req: ChatRequest, dep: Deployment) -> int: ...


def retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` (preferred, OpenAI) or `retry-after`."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    s = headers.get("retry-after")
    if s:
        try:
            return float(s)
        except ValueError:
            return None
    return None


def upstream_message(body: bytes) -> str:
    """The human message inside an OpenAI- or Anthropic-shaped error body."""
    try:
        data = orjson.loads(body)
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except (orjson.JSONDecodeError, AttributeError):
        pass
    text = body[:300].decode("utf-8", "replace").strip()
    return text or "(empty body)"


# Secrets that look like API keys: OpenAI's sk-…, Anthropic's sk-ant-…, ours tw-….
_KEYLIKE = re.compile(r"\b(?:sk|tw|key)-[A-Za-z0-9_\-]{8,}")


def redact(text: str, *secrets: str | None) -> str:
    """An upstream's error text with our credentials (and anything key-shaped) cut."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)


_RATELIMIT = ("x-ratelimit-", "anthropic-ratelimit-")


def ratelimit_headers(headers: Any) -> dict[str, str]:
    """The provider's rate-limit headers (OpenAI's and Anthropic's), lower-cased, in
    one pass over the response's headers."""
    out: dict[str, str] = {}
    for k, v in headers.items():
        k = k.lower()
        if k.startswith(_RATELIMIT):
            out[k] = v
    return out


def error_from_status(status: int, body: bytes, headers: Any, dep: Deployment) -> TollwayError:
    err = _error_from_status(status, body, headers, dep)
    err.upstream_status = status
    err.upstream_headers = ratelimit_headers(headers)
    return err


def _error_from_status(status: int, body: bytes, headers: Any, dep: Deployment) -> TollwayError:
    """Map an upstream HTTP error to ours. Client errors keep their status so the caller
    sees what the provider said; the provider's key is never part of the message."""
    where = f"{dep.provider}/{dep.model}"
    msg = redact(upstream_message(body), dep.api_key)
    if status == 429:
        return RateLimited(f"Upstream {where} is rate limiting: {msg}",
                           retry_after=retry_after(headers), code="upstream_rate_limited")
    if status in (401, 403):
        # Our credentials for the provider are wrong: that is the operator's problem,
        # not the caller's, so it is not passed on as the caller's 401.
        return UpstreamError(f"Upstream {where} rejected Tollway's credentials ({status}): "
                             f"{msg}", status=502, code="upstream_auth_failed")
    if 400 <= status < 500:
        return InvalidRequest(f"Upstream {where} rejected the request: {msg}", status=status,
                              code="upstream_invalid_request")
    return UpstreamError(f"Upstream {where} failed with {status}: {msg}", status=502)


__all__ = ["Provider", "Unauthorized", "error_from_status", "retry_after"]
