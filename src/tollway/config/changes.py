"""What changed between the running configuration and a reloaded one, and what of it
a running gateway cannot take without a restart.

A reload (SIGHUP, `POST /admin/reload`) rebuilds the rules every request reads —
models, aliases, prices, tiers, routing, limits, budgets' rules, guards, history,
the cache's settings, alerts, auth. What is bound when the process starts stays as it
was until the next restart, and is said so rather than silently ignored: where it
listens and how it treats connections (the socket, uvicorn, the drain are made
before the app), the store and the cache's own Redis (connections, migrations), the
bundled local model (loaded once), the ledger writer, the capture file, the
retention task and the batch runner's pacing."""

from __future__ import annotations

from typing import Any

import msgspec

from tollway.config.root import Config

# server.* fields read once, when the process starts.
SERVER_AT_START = ("host", "port", "access_log", "drain_seconds", "header_timeout_seconds",
                   "body_timeout_seconds", "max_connections_per_ip", "batch_concurrency",
                   "batch_poll_seconds")
SECTIONS_AT_START = ("store", "local", "ledger", "capture")


def changed(running: Config, new: Config) -> list[str]:
    """The top-level sections that differ (`models`, `prices`, `budgets`, ...)."""
    return [name for name in running.__struct_fields__
            if _plain(getattr(running, name)) != _plain(getattr(new, name))]


def needs_restart(running: Config, new: Config) -> list[str]:
    """The fields `new` changes that only a restart applies, as `section.field`."""
    out = [f"server.{f}" for f in SERVER_AT_START
           if getattr(running.server, f) != getattr(new.server, f)]
    out += [s for s in SECTIONS_AT_START
            if _plain(getattr(running, s)) != _plain(getattr(new, s))]
    if running.cache.redis_url != new.cache.redis_url:
        out.append("cache.redis_url")
    if running.conversations.retention_days != new.conversations.retention_days:
        out.append("conversations.retention_days")
    return out


def as_running(running: Config, new: Config) -> Config:
    """`new`, with what needs a restart kept as it runs: what the gateway then says it
    runs (its `config`) is what it does."""
    server = msgspec.structs.replace(
        new.server, **{f: getattr(running.server, f) for f in SERVER_AT_START})
    return msgspec.structs.replace(
        new, server=server, **{s: getattr(running, s) for s in SECTIONS_AT_START},
        cache=msgspec.structs.replace(new.cache, redis_url=running.cache.redis_url),
        conversations=msgspec.structs.replace(
            new.conversations, retention_days=running.conversations.retention_days))


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value)
