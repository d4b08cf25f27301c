"""Typed configuration: `tollway.yaml` plus the environment, validated at start.

Mistakes are reported as `ConfigError("<field path>: <what is expected>")`; the CLI
prints that and exits 1. Secrets are never written in the file: `${VAR}` is replaced
by the environment variable VAR, and a missing one is an error naming it.
With no file, `embedded_default()` builds the zero-setup configuration.

One module per section of the file, each with its structs and its own checks; `root`
holds `Config` and the checks across sections, `loading` reads a file or a mapping,
`defaults` builds the zero-setup configuration. Import from here.
"""

from tollway.config.alerts import AlertsConfig
from tollway.config.auth import AuthConfig
from tollway.config.budgets import Budget, BudgetsConfig, DowngradeRule, check_budget
from tollway.config.cache import CacheConfig, ModelCacheConfig, SemanticCacheConfig
from tollway.config.capture import CaptureConfig
from tollway.config.defaults import (
    ANTHROPIC_WILDCARD,
    OPENAI_WILDCARD,
    embedded_default,
)
from tollway.config.guards import (
    GuardMode,
    GuardModes,
    GuardsConfig,
    InputGuardConfig,
    check_threshold,
)
from tollway.config.history import (
    ConversationsConfig,
    HistoryConfig,
    HistoryPolicy,
    ModelHistoryConfig,
)
from tollway.config.ledger import LedgerConfig
from tollway.config.loading import load, load_server, parse, source
from tollway.config.local import EMBEDDING_MODEL, LocalModelConfig
from tollway.config.models import (
    PROVIDERS,
    DeploymentConfig,
    ModelConfig,
    PriceConfig,
    Timeouts,
)
from tollway.config.rate_limits import RateLimit, RateLimitsConfig
from tollway.config.root import Config
from tollway.config.routing import BreakerConfig, PacingConfig, RetryConfig, RoutingConfig
from tollway.config.server import ServerConfig
from tollway.config.store import StoreConfig
from tollway.config.tiers import AutoDowngrade, RouteByTurn, TierConfig

__all__ = [
    "ANTHROPIC_WILDCARD",
    "EMBEDDING_MODEL",
    "OPENAI_WILDCARD",
    "PROVIDERS",
    "AlertsConfig",
    "AuthConfig",
    "AutoDowngrade",
    "BreakerConfig",
    "Budget",
    "BudgetsConfig",
    "CacheConfig",
    "CaptureConfig",
    "Config",
    "ConversationsConfig",
    "DeploymentConfig",
    "DowngradeRule",
    "GuardMode",
    "GuardModes",
    "GuardsConfig",
    "HistoryConfig",
    "HistoryPolicy",
    "InputGuardConfig",
    "LedgerConfig",
    "LocalModelConfig",
    "ModelCacheConfig",
    "ModelConfig",
    "ModelHistoryConfig",
    "PacingConfig",
    "PriceConfig",
    "RateLimit",
    "RateLimitsConfig",
    "RetryConfig",
    "RouteByTurn",
    "RoutingConfig",
    "SemanticCacheConfig",
    "ServerConfig",
    "StoreConfig",
    "TierConfig",
    "Timeouts",
    "check_budget",
    "check_threshold",
    "embedded_default",
    "load",
    "load_server",
    "parse",
    "source",
]
