"""The `models` and `prices` sections: an alias's deployments, its own limits and
overrides, and what an upstream model costs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import msgspec

from tollway.config.cache import ModelCacheConfig
from tollway.config.guards import GuardModes
from tollway.config.hints import did_you_mean
from tollway.config.history import ModelHistoryConfig
from tollway.config.routing import BreakerConfig, PacingConfig, RetryConfig
from tollway.config.tiers import RouteByTurn
from tollway.config.wildcards import is_pattern, model_problem, pattern_problem
from tollway.errors import ConfigError
from tollway.types import Deployment

PROVIDERS = ("openai", "anthropic", "local")
OPENAI_BASE = "https://api.openai.com/"
ANTHROPIC_BASE = "https://api.anthropic.com"


class Timeouts(msgspec.Struct, forbid_unknown_fields=True):
    """One attempt's bounds, in seconds; each one passed moves the request on to the
    next deployment like any retryable failure (504 when none is left)."""

    connect: float = 5.0  # the TCP connection
    # From sending to the answer's first byte: a stream's first event, a JSON reply's
    # response (which providers send once the whole answer is generated).
    first_token: float = 60.0
    idle: float = 30.0  # a stream's longest silence after its first event
    total: float = 600.0  # the attempt, to its last byte


class PriceConfig(msgspec.Struct, forbid_unknown_fields=True):
    """USD per 1M tokens. Missing optional prices fall back: cached_input -> input,
    batch_* -> half the standard price (the providers' batch discount)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    batch_input: float | None = None
    batch_output: float | None = None


class DeploymentConfig(msgspec.Struct, forbid_unknown_fields=True):
    provider: Literal["openai", "anthropic", "local"]
    # The upstream's name for the model; under a wildcard alias (`openai/*`), a `*`
    # here stands for what the alias's `*` matched (config/wildcards.py).
    model: str
    api_base: str | None = None
    api_key: str | None = None
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    headers: dict[str, str] = {}
    # Price of this deployment when it is not (or differently) in the price table,
    # e.g. a self-hosted model's cost per token.
    price: PriceConfig | None = None
    # Load balancing: the lowest priority with a usable deployment takes the traffic,
    # shared by weight and by how busy and fast each one is.
    weight: float = 1.0
    priority: int = 0
    pacing: PacingConfig = msgspec.field(default_factory=PacingConfig)
    # POST /v1/responses to this deployment: `native` sends it to the upstream's own
    # /responses (reasoning items, hosted tools, every parameter kept); `translate`
    # makes it a chat completion; `auto`: native for provider openai on OpenAI's own
    # api_base (unset or https://api.openai.com/...), translate elsewhere (most
    # compatible servers have no /responses).
    responses: Literal["auto", "native", "translate"] = "auto"
    # Anthropic: put cache_control breakpoints on the system prompt and the history
    # (unset: the alias's `prompt_cache`).
    prompt_cache: bool | None = None
    # A batch's lines for this deployment (/v1/batches, message batches): `upstream`
    # sends them to the provider's own batch API (OpenAI's, Anthropic's), at its batch
    # price (half the interactive one), answered within its 24 h window; `local`: Tollway
    # sends them one by one at the interactive price; `auto`: upstream for provider
    # openai or anthropic on the provider's own api_base, local elsewhere (most
    # compatible servers have no batch API).
    batches: Literal["auto", "upstream", "local"] = "auto"

    def upstream_batches(self) -> bool:
        if self.batches != "auto":
            return self.batches == "upstream"
        own = {"openai": OPENAI_BASE, "anthropic": ANTHROPIC_BASE}.get(self.provider)
        return own is not None and (self.api_base is None or self.api_base.startswith(own))

    def native_responses(self) -> bool:
        if self.responses != "auto":
            return self.responses == "native"
        return self.provider == "openai" and (
            self.api_base is None or self.api_base.startswith(OPENAI_BASE))

    def to_deployment(self, prompt_cache: bool = True) -> Deployment:
        """`prompt_cache`: the alias's, for a deployment that does not say."""
        return Deployment(
            provider=self.provider,
            model=self.model,
            api_base=self.api_base,
            api_key=self.api_key,
            connect_timeout=self.timeouts.connect,
            first_token_timeout=self.timeouts.first_token,
            idle_timeout=self.timeouts.idle,
            total_timeout=self.timeouts.total,
            headers=tuple(self.headers.items()),
            weight=self.weight,
            priority=self.priority,
            responses_native=self.native_responses(),
            batch_api=self.upstream_batches(),
            prompt_cache=prompt_cache if self.prompt_cache is None else self.prompt_cache,
        )


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True):
    deployments: list[DeploymentConfig]
    # Per-alias limits; each falls back to the server-wide one.
    default_max_tokens: int | None = None
    max_tokens_cap: int | None = None
    max_input_tokens: int | None = None
    max_cost_usd: float | None = None
    min_output_tokens: int | None = None
    # Aliases to try, in order, when every deployment of this one failed or is open
    # (429, 5xx, timeouts, open breakers, a too-long context: never other 4xx).
    fallbacks: list[str] = []
    retry: RetryConfig | None = None
    breaker: BreakerConfig | None = None
    cache: ModelCacheConfig | None = None
    guards: GuardModes | None = None
    history: ModelHistoryConfig | None = None
    # Anthropic deployments: add prompt-cache breakpoints (each deployment may override).
    prompt_cache: bool = True
    # Requests for this alias by its plain name go to a cheaper tier when their latest
    # turn needs no more (config/tiers.py).
    route_by_turn: RouteByTurn | None = None


def check_models(models: dict[str, ModelConfig], is_model: Callable[[str], bool]) -> None:
    """`is_model`: whether a name (alias or model) resolves, for the fallbacks."""
    for alias, mc in models.items():
        pattern = is_pattern(alias)
        if pattern and (why := pattern_problem(alias)):
            raise ConfigError(f"models.{alias}: {why}")
        if not mc.deployments:
            raise ConfigError(f"models.{alias}.deployments: expected at least one deployment")
        for i, d in enumerate(mc.deployments):
            where = f"models.{alias}.deployments[{i}]"
            if why := model_problem(d.model, pattern):
                raise ConfigError(f"{where}.model: {why}")
            if d.provider in ("openai", "anthropic") and not d.api_key:
                raise ConfigError(f"{where}.api_key: required for provider {d.provider} "
                                  f"(write it as ${{ENV_VAR}})")
            if d.api_base and not d.api_base.startswith(("http://", "https://")):
                raise ConfigError(f"{where}.api_base: expected an http(s) URL, got {d.api_base!r}")
            if d.responses == "native" and d.provider != "openai":
                raise ConfigError(f"{where}.responses: 'native' needs provider openai (the "
                                  f"Responses API is OpenAI's), not {d.provider}")
            t = d.timeouts
            for name in ("connect", "first_token", "idle", "total"):
                if getattr(t, name) <= 0:
                    raise ConfigError(f"{where}.timeouts.{name}: must be > 0 seconds")
    for alias, mc in models.items():
        for i, fb in enumerate(mc.fallbacks):
            if not is_model(fb):
                raise ConfigError(f"models.{alias}.fallbacks[{i}]: {fb!r} is not a configured "
                                  "model" + did_you_mean(fb, models))
        for i, d in enumerate(mc.deployments):
            if d.weight <= 0:
                raise ConfigError(f"models.{alias}.deployments[{i}].weight: must be > 0")


def check_prices(prices: dict[str, PriceConfig]) -> None:
    for model, price in prices.items():
        if min(price.input, price.output) < 0:
            raise ConfigError(f"prices.{model}: prices must be >= 0")
