"""The `capture` section: the chat traffic recorded as a trace `tollway replay` reads.
Off unless `path` is set."""

from __future__ import annotations

import msgspec

from tollway.errors import ConfigError


class CaptureConfig(msgspec.Struct, forbid_unknown_fields=True):
    path: str | None = None  # the JSON-lines file turns are appended to; None: off
    # The share of conversations captured (decided per conversation, so a captured one
    # has all its turns).
    sample: float = 1.0
    # Personal data and secrets replaced by placeholders before anything is written.
    redact: bool = True
    flush_seconds: float = 1.0
    # Turns waiting to be written; past it, new ones are dropped (and counted).
    max_buffered_turns: int = 10_000

    @property
    def enabled(self) -> bool:
        return self.path is not None


def check_capture(c: CaptureConfig) -> None:
    if c.path is not None and not c.path.strip():
        raise ConfigError("capture.path: a file path (leave it out to capture nothing)")
    if not 0.0 < c.sample <= 1.0:
        raise ConfigError(f"capture.sample: a share in (0, 1], got {c.sample}")
    if c.flush_seconds <= 0:
        raise ConfigError(f"capture.flush_seconds: must be > 0, got {c.flush_seconds}")
    if c.max_buffered_turns < 1:
        raise ConfigError(
            f"capture.max_buffered_turns: must be >= 1, got {c.max_buffered_turns}")
