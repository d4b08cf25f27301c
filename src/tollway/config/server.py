"""The `server` section: where the gateway listens and its server-wide request limits."""

from __future__ import annotations

from typing import Literal

import msgspec

from tollway.errors import ConfigError


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 4000
    max_body_bytes: int = 4 * 1024 * 1024
    # Applied when a request names no max_tokens: an unbounded answer is an unbounded bill.
    default_max_tokens: int = 4096
    # Requests asking for more are clamped (reply header x-tollway-max-tokens-clamped).
    max_tokens_cap: int = 16384
    max_n: int = 8
    max_messages: int = 2048
    # Pre-flight guards (None: off). A request whose input exceeds max_input_tokens is
    # refused; one whose worst case (input + max_tokens of output) would cost more than
    # max_cost_usd has max_tokens lowered to fit if at least min_output_tokens remain,
    # else it is refused. The same ceiling cuts a stream that reaches it.
    max_input_tokens: int | None = None
    max_cost_usd: float | None = None
    min_output_tokens: int = 16
    # A model with no price: "refuse" always, "allow" always (cost reported as 0 and
    # marked unpriced), or "refuse_if_dollar_limit" (refuse when a dollar limit applies).
    unpriced: Literal["refuse", "allow", "refuse_if_dollar_limit"] = "refuse_if_dollar_limit"
    # One JSON line per request on stderr (the ledger row; never a key or a prompt).
    # Unset: on with the shared store (a fleet, whose logs are collected), off with the
    # embedded one (local work, where a line per request buries everything else).
    access_log: bool | None = None
    # Shutting down (SIGTERM, Ctrl-C): new connections stop at once; requests and streams
    # under way may finish for this long, then end with an error event the SDKs raise
    # (503, "shutting down") and their ledger row.
    drain_seconds: float = 30.0
    # Slow clients: a request's headers must all arrive within header_timeout_seconds of
    # its first byte (or of the connection opening), its body within body_timeout_seconds
    # of its headers (408 otherwise); each client address may hold at most
    # max_connections_per_ip open connections per process (more are answered 503).
    # Behind a proxy every connection comes from its address: raise it, or null for none.
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    max_connections_per_ip: int | None = 1024
    # Batches (/v1/batches): how many lines this process runs at once (the batch's own
    # pacing), and how often a batch sent to a provider's batch API is polled.
    batch_concurrency: int = 8
    batch_poll_seconds: float = 30.0


def check_server(s: ServerConfig) -> None:
    if not 0 < s.port < 65536:
        raise ConfigError(f"server.port: expected 1-65535, got {s.port}")
    if s.default_max_tokens < 1 or s.max_tokens_cap < s.default_max_tokens:
        raise ConfigError("server.max_tokens_cap: must be >= server.default_max_tokens >= 1")
    if s.max_cost_usd is not None and s.max_cost_usd <= 0:
        raise ConfigError("server.max_cost_usd: must be > 0 (or left out to disable)")
    if s.drain_seconds < 0:
        raise ConfigError("server.drain_seconds: must be >= 0 (0: end what runs at once)")
    if s.batch_concurrency < 1 or not s.batch_poll_seconds > 0:
        raise ConfigError("server.batch_concurrency: must be >= 1, and "
                          "server.batch_poll_seconds > 0")
    for name in ("header_timeout_seconds", "body_timeout_seconds"):
        if not getattr(s, name) > 0:
            raise ConfigError(f"server.{name}: must be > 0 seconds")
    if s.max_connections_per_ip is not None and s.max_connections_per_ip < 1:
        raise ConfigError("server.max_connections_per_ip: must be >= 1 (or null for no cap)")
