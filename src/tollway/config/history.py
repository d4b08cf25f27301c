"""The `history` section (what of a conversation goes upstream), an alias's overrides of
it, and the `conversations` section (the ones the gateway keeps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import msgspec

from tollway.errors import ConfigError

HistoryPolicy = Literal["none", "window", "summarise"]


class HistoryConfig(msgspec.Struct, forbid_unknown_fields=True):
    """How much of a conversation's history goes upstream, for server-side
    conversations and for histories a client sends whole. `window`: the system prompt
    and the most recent turns that fit in `window_tokens` (the latest turn always goes;
    a tool call never goes without its results). `summarise`: once the prompt passes
    `summarise_above` tokens, the older turns are replaced by a summary that
    `summary_model` writes, kept and extended every few turns (never every turn),
    leaving about the last `keep_recent_tokens` verbatim. The window drops old turns in
    steps of `window_step` x `window_tokens`, not one at a time, so consecutive turns
    send the same prefix and the provider's prompt cache serves it (0: one turn at a
    time)."""

    policy: HistoryPolicy = "none"
    window_tokens: int = 4000
    window_step: float = 0.5
    summarise_above: int = 4000
    keep_recent_tokens: int = 1500
    summary_model: str | None = None  # an alias; None: the request's own
    summary_max_tokens: int = 400


class ModelHistoryConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Per-alias overrides of the `history` section (unset: inherited)."""

    policy: HistoryPolicy | None = None
    window_tokens: int | None = None
    window_step: float | None = None
    summarise_above: int | None = None
    keep_recent_tokens: int | None = None
    summary_model: str | None = None
    summary_max_tokens: int | None = None


class ConversationsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Server-side conversations: a request that names one (`x-tollway-conversation`
    or the body's `conversation`) sends only its new turns; the gateway keeps the
    rest, owned by the calling key (and end user). Caps are conversation budgets
    (`budgets.conversations`)."""

    enabled: bool = True
    max_turns: int = 2000  # messages kept per conversation; past it, start a new one
    # Conversations idle this long are deleted (with their summaries, and summaries of
    # histories sent whole as old); None: kept until deleted.
    retention_days: float | None = None


def check_history(history: HistoryConfig, overrides: dict[str, ModelHistoryConfig],
                  is_model: Callable[[str], bool]) -> None:
    """`overrides`: the aliases' own (`models.NAME.history`), by alias; `is_model`: whether
    a name (alias or model) resolves, for `summary_model`."""
    sections: list[tuple[str, HistoryConfig | ModelHistoryConfig]] = [("history", history)]
    sections += [(f"models.{a}.history", o) for a, o in overrides.items()]
    for where, h in sections:
        for name in ("window_tokens", "summarise_above", "summary_max_tokens"):
            v = getattr(h, name)
            if v is not None and v < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1")
        if h.window_step is not None and not 0 <= h.window_step < 1:
            raise ConfigError(f"{where}.window_step: a fraction of window_tokens, "
                              "0 <= window_step < 1")
        if h.keep_recent_tokens is not None and h.keep_recent_tokens < 0:
            raise ConfigError(f"{where}.keep_recent_tokens: must be >= 0")
        if h.summary_model is not None and not is_model(h.summary_model):
            raise ConfigError(f"{where}.summary_model: {h.summary_model!r} is not a "
                              "configured model")


def check_conversations(c: ConversationsConfig) -> None:
    if c.max_turns < 2:
        raise ConfigError("conversations.max_turns: must be >= 2")
    days = c.retention_days
    if days is not None and days <= 0:
        raise ConfigError("conversations.retention_days: must be > 0 (or left out to keep "
                          "conversations until deleted)")
