"""Tiers: a request may ask for a class of model (`tier:simple`, or the
x-tollway-tier header) instead of a model; the configuration says which model serves
each tier and with what output cap. Very short inputs may be moved to a cheaper tier."""

from __future__ import annotations

from dataclasses import dataclass

from tollway.config import Config
from tollway.errors import InvalidRequest

PREFIX = "tier:"


@dataclass(slots=True)
class TierChoice:
    model: str  # the alias or model that serves the request
    tier: str | None = None
    max_tokens: int | None = None  # the tier's output cap


def select(model: str, header: str | None, config: Config) -> TierChoice:
    """The header wins over the model name: it is the more deliberate of the two."""
    if header:
        name = header.strip()
    elif model.startswith(PREFIX):
        name = model[len(PREFIX):]
    else:
        return TierChoice(model)
    return named(name, config)


def named(name: str, config: Config) -> TierChoice:
    tier = config.tiers.get(name)
    if tier is None:
        known = ", ".join(sorted(config.tiers)) or "(none configured)"
        raise InvalidRequest(f"Unknown tier '{name}'. Configured tiers: {known}.",
                             param="model", code="unknown_tier")
    return TierChoice(tier.model, name, tier.max_tokens)


def downgrade(choice: TierChoice, input_tokens: int, config: Config) -> TierChoice | None:
    """The cheaper tier for a very short input, or None to keep the choice."""
    rule = config.auto_downgrade
    if (not rule.enabled or choice.tier is None or choice.tier == rule.to
            or choice.tier in rule.never_from or input_tokens >= rule.max_input_tokens):
        return None
    return named(rule.to, config)
