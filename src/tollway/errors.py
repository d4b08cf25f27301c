"""One exception hierarchy; each error knows its HTTP status and OpenAI error body.

Every failure a caller can see is a `TollwayError`. The server turns it into
`{"error": {"message", "type", "param", "code"}}` with the right status (and
`Retry-After` when the caller should come back later). Anything else that escapes
is a bug and is answered as a 500 without a traceback.
"""

from __future__ import annotations

from typing import Any

import orjson


class TollwayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None
    # Set when the error came from a provider's HTTP answer (used by retry decisions).
    upstream_status: int | None = None
    # Its rate-limit headers, lower-cased (for pacing); replaced per error, never mutated.
    upstream_headers: dict[str, str] = {}

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.body())

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.retry_after is None:
            return []
        # Retry-After takes whole seconds; never 0 so clients don't hot-loop.
        secs = max(1, int(self.retry_after + 0.999))
        return [(b"retry-after", str(secs).encode())]


class InvalidRequest(TollwayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(TollwayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(TollwayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(TollwayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(TollwayError):
    """The client was too slow sending its request (headers or body)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(TollwayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(TollwayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RateLimited(TollwayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(TollwayError):
    """A budget cannot cover this request's worst case. 429 by default (402 by
    config). `x-should-retry: false` stops the OpenAI/Anthropic SDKs from retrying
    what only a new budget window or a bigger budget can fix."""

    status = 429
    type = "budget_exceeded"
    code = "budget_exceeded"
    budget: Any = None  # the policy.budget.Applied that refused
    remaining: float = 0.0
    level: float = 0.0  # its counter's level (spent + held) when it refused

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*super().headers(), (b"x-should-retry", b"false")]


class Forbidden(TollwayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class UpstreamError(TollwayError):
    """The provider answered with an error we pass on (status kept when it is a 4xx)."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class InvalidOutput(TollwayError):
    """The model's answer broke what the request asked for (its JSON schema)."""

    status = 502
    type = "invalid_model_output"
    code = "schema_mismatch"


class UpstreamTimeout(TollwayError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class Unavailable(TollwayError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class ConfigError(Exception):
    """A configuration mistake: reported with its field path, then exit 1."""
