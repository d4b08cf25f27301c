"""The `guards` section (input limits, PII, prompt injection, JSON schema) and the
overrides an alias or a key may set."""

from __future__ import annotations

from typing import Literal

import msgspec

from tollway.errors import ConfigError

GuardMode = Literal["off", "log", "redact", "block"]


class InputGuardConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Limits checked before anything else; a request past one gets a 400 naming it."""

    max_messages: int | None = 1000
    max_chars_per_message: int | None = 100_000
    max_chars_total: int | None = 1_000_000
    allowed_roles: list[str] | None = None  # None: all
    allowed_content_types: list[str] | None = None  # content part types; None: all


class GuardModes(msgspec.Struct, forbid_unknown_fields=True):
    """Per-alias (`models.NAME.guards`) or per-key overrides; unset: inherited."""

    pii: GuardMode | None = None
    pii_output: GuardMode | None = None
    restore_pii: bool | None = None
    injection: Literal["off", "log", "block"] | None = None
    injection_threshold: float | None = None


class GuardsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Guards on what goes to a model and what comes back. `pii` on the input: off,
    log (record what was found), redact (typed placeholders replace the values before
    the request leaves; `restore_pii` puts them back in the reply) or block (400).
    `pii_output` on the reply: log, redact or block (502); on a stream only log, as the
    text has reached the client by the time it is complete. `injection`: off, log or
    block at `injection_threshold`. Output that breaks the request's JSON schema is
    retried `schema_retries` times, then answered with an error: never passed on."""

    input: InputGuardConfig = msgspec.field(default_factory=InputGuardConfig)
    pii: GuardMode = "off"
    pii_output: GuardMode = "off"
    restore_pii: bool = False
    injection: Literal["off", "log", "block"] = "off"
    injection_threshold: float = 0.5
    schema_retries: int = 1


def check_guards(g: GuardsConfig, overrides: dict[str, GuardModes]) -> None:
    """`overrides`: the aliases' own (`models.NAME.guards`), by alias."""
    if g.schema_retries < 0:
        raise ConfigError("guards.schema_retries: must be >= 0")
    thresholds = [("guards.injection_threshold", g.injection_threshold)] + [
        (f"models.{a}.guards.injection_threshold", o.injection_threshold)
        for a, o in overrides.items()]
    for where, t in thresholds:
        check_threshold(t, where)
    for name in ("max_messages", "max_chars_per_message", "max_chars_total"):
        v = getattr(g.input, name)
        if v is not None and v < 1:
            raise ConfigError(f"guards.input.{name}: must be >= 1 (or null for no limit)")


def check_threshold(t: float | None, where: str) -> None:
    """An injection threshold: a score in (0, 1]."""
    if t is not None and not 0 < t <= 1:
        raise ConfigError(f"{where}: a score in (0, 1], e.g. 0.5")
