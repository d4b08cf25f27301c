"""The `tiers` and `auto_downgrade` sections: named tiers of models, and sending short
inputs to a cheaper one."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from tollway.errors import ConfigError


class TierConfig(msgspec.Struct, forbid_unknown_fields=True):
    model: str  # an alias or model name
    max_tokens: int | None = None  # output cap for requests in this tier


class AutoDowngrade(msgspec.Struct, forbid_unknown_fields=True):
    """Send very short inputs to a cheaper tier (off by default)."""

    enabled: bool = False
    max_input_tokens: int = 50
    to: str = "simple"
    never_from: list[str] = msgspec.field(default_factory=lambda: ["complex"])


def check_tiers(tiers: dict[str, TierConfig], auto_downgrade: AutoDowngrade,
                is_model: Callable[[str], bool]) -> None:
    """`is_model`: whether a name (alias or model) resolves, for each tier's model."""
    for name, tier in tiers.items():
        if not is_model(tier.model):
            raise ConfigError(f"tiers.{name}.model: {tier.model!r} is not a configured model")
        if tier.max_tokens is not None and tier.max_tokens < 1:
            raise ConfigError(f"tiers.{name}.max_tokens: must be >= 1")
    ad = auto_downgrade
    if ad.enabled and ad.to not in tiers:
        raise ConfigError(f"auto_downgrade.to: {ad.to!r} is not a configured tier")
