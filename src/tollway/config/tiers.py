"""The `tiers` and `auto_downgrade` sections: named tiers of models, and sending short
inputs to a cheaper one."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from tollway.config.hints import did_you_mean
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


class RouteByTurn(msgspec.Struct, forbid_unknown_fields=True):
    """An alias's own setting (`models.NAME.route_by_turn`): a request for it by its
    plain name whose latest user turn the cheap tier can answer (policy/complexity.py)
    is sent to `cheap_tier` instead."""

    cheap_tier: str
    # For the turns the rules leave open: the embedding classifier decides (loads the
    # bundled model); off, they stay on the alias.
    classifier: bool = True


def check_route_by_turn(own: dict[str, RouteByTurn], tiers: dict[str, TierConfig]) -> None:
    """`own`: alias -> its route_by_turn, for the aliases that have one."""
    for alias, r in own.items():
        if r.cheap_tier not in tiers:
            known = ", ".join(sorted(tiers)) or "(none configured)"
            raise ConfigError(f"models.{alias}.route_by_turn.cheap_tier: {r.cheap_tier!r} is "
                              f"not a configured tier (tiers: {known})")


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
        raise ConfigError(f"auto_downgrade.to: {ad.to!r} is not a configured tier"
                          + did_you_mean(ad.to, tiers))
