"""`Config`, the whole of tollway.yaml, and its validation. Each section module checks
its own settings and is handed what it needs of the others (whether a name is a model,
the tier names, the aliases' overrides), so none of them imports this module."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from tollway.config.alerts import AlertsConfig, check_alerts
from tollway.config.auth import AuthConfig
from tollway.config.budgets import BudgetsConfig, check_budgets
from tollway.config.cache import CacheConfig, check_cache
from tollway.config.capture import CaptureConfig, check_capture
from tollway.config.guards import GuardsConfig, check_guards
from tollway.config.hints import did_you_mean
from tollway.config.history import (
    ConversationsConfig,
    HistoryConfig,
    check_conversations,
    check_history,
)
from tollway.config.ledger import LedgerConfig
from tollway.config.local import LocalModelConfig
from tollway.config.models import ModelConfig, PriceConfig, check_models, check_prices
from tollway.config.rate_limits import RateLimitsConfig, check_rate_limits
from tollway.config.routing import RoutingConfig, check_routing
from tollway.config.server import ServerConfig, check_server
from tollway.config.store import StoreConfig, check_store
from tollway.config.tiers import AutoDowngrade, TierConfig, check_route_by_turn, check_tiers
from tollway.config.wildcards import Patterns, family_provider, is_pattern
from tollway.errors import ConfigError

_T = TypeVar("_T")


class Config(msgspec.Struct, forbid_unknown_fields=True):
    models: dict[str, ModelConfig] = {}
    # alias -> another alias, e.g. {"default": "local"}
    aliases: dict[str, str] = {}
    # Tiers: a request names one with model "tier:NAME" or the x-tollway-tier header.
    tiers: dict[str, TierConfig] = {}
    auto_downgrade: AutoDowngrade = msgspec.field(default_factory=AutoDowngrade)
    # USD per 1M tokens by upstream model name; extends and overrides the bundled table.
    prices: dict[str, PriceConfig] = {}
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    budgets: BudgetsConfig = msgspec.field(default_factory=BudgetsConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    ledger: LedgerConfig = msgspec.field(default_factory=LedgerConfig)
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    rate_limits: RateLimitsConfig = msgspec.field(default_factory=RateLimitsConfig)
    local: LocalModelConfig = msgspec.field(default_factory=LocalModelConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    guards: GuardsConfig = msgspec.field(default_factory=GuardsConfig)
    history: HistoryConfig = msgspec.field(default_factory=HistoryConfig)
    conversations: ConversationsConfig = msgspec.field(default_factory=ConversationsConfig)
    capture: CaptureConfig = msgspec.field(default_factory=CaptureConfig)

    def resolve(self, name: str) -> tuple[str, ModelConfig] | None:
        """Alias or model name -> (canonical alias, its model config); exact names only
        (a wildcard alias is found by its own name: `gateway/routes.py` matches the
        names it serves)."""
        seen = 0
        while name in self.aliases and seen < 8:
            name, seen = self.aliases[name], seen + 1
        mc = self.models.get(name)
        return (name, mc) if mc is not None else None

    @property
    def access_log(self) -> bool:
        """Whether each ledger row is echoed on stderr (`server.access_log`, else: with
        the shared store only)."""
        own = self.server.access_log
        return self.store.shared if own is None else own

    def public_models(self) -> list[str]:
        return sorted({*self.models, *self.aliases, *(f"tier:{t}" for t in self.tiers)})


def check(cfg: Config) -> None:
    """Raise the first problem found. The order is part of the behaviour: with several
    mistakes, the one reported stays the same."""

    patterns = Patterns(cfg.models)

    def is_model(name: str) -> bool:
        """A name a request could be served by: an alias, or one a wildcard serves
        (unprefixed names by their family's provider; the price table is checked later,
        when routes are built)."""
        found = cfg.resolve(name)
        if found is not None:
            return not is_pattern(found[0])
        return patterns.match_with(name, family_provider(name)) is not None

    def is_alias(name: str) -> bool:  # per-alias settings name aliases, patterns too
        return cfg.resolve(name) is not None

    check_models(cfg.models, is_model)
    for alias, target in cfg.aliases.items():
        found = cfg.resolve(alias)
        if found is None or is_pattern(found[0]):
            raise ConfigError(f"aliases.{alias}: points to {target!r}, which is not a model"
                              + (" (a wildcard alias is not one model)" if found else
                                 did_you_mean(target, [*cfg.models, *cfg.aliases])))
    check_tiers(cfg.tiers, cfg.auto_downgrade, is_model)
    check_route_by_turn(_overrides(cfg, lambda mc: mc.route_by_turn), cfg.tiers)
    check_prices(cfg.prices)
    check_budgets(cfg.budgets, cfg.tiers)
    check_alerts(cfg.alerts)
    check_rate_limits(cfg.rate_limits, is_alias)
    check_routing(cfg.routing, _overrides(cfg, lambda mc: mc.retry),
                  _overrides(cfg, lambda mc: mc.breaker))
    check_cache(cfg.cache, _overrides(cfg, lambda mc: mc.cache))
    check_guards(cfg.guards, _overrides(cfg, lambda mc: mc.guards))
    check_history(cfg.history, _overrides(cfg, lambda mc: mc.history), is_model)
    check_conversations(cfg.conversations)
    check_capture(cfg.capture)
    check_store(cfg.store)
    check_server(cfg.server)


def _overrides(cfg: Config, section: Callable[[ModelConfig], _T | None]) -> dict[str, _T]:
    """Alias -> its own settings of one section, for the aliases that have them."""
    return {alias: own for alias, mc in cfg.models.items() if (own := section(mc)) is not None}
