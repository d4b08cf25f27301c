"""What `tollway serve` says when it starts: one essential line (where it listens,
what it serves, and whether anyone may call it), then — unless `--quiet` — the report
an operator checks before trusting it: the config file read (or the defaults), the
store, where each model goes, which features are on, the ledger's stderr echo, and a
warning when no key is required. Plain functions of the configuration, so a test reads
the same lines the terminal shows."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from tollway.cache.controls import for_alias
from tollway.config import Config, ModelConfig
from tollway.policy.auth import keys_required

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class Listening:
    version: str
    host: str
    port: int
    workers: int = 1
    source: str | None = None  # the config file read; None: the embedded defaults

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def essential(cfg: Config, at: Listening) -> str:
    """The one line `--quiet` keeps (tests wait on its "serving on")."""
    line = (f"tollway {at.version} serving on {at.url}/v1  models: "
            f"{', '.join(cfg.public_models())}")
    if at.workers > 1:
        line += f"  ({at.workers} workers)"
    if not keys_required(cfg.auth):
        line += "  [OPEN: no key required]"
    return line


def report(cfg: Config, at: Listening) -> list[str]:
    """The whole start-up report, essential line first."""
    lines = [essential(cfg, at),
             f"  config    {at.source or 'defaults (no tollway.yaml; TOLLWAY_CONFIG unset)'}",
             f"  store     {store(cfg)}",
             "  models"]
    lines += [f"    {line}" for line in models(cfg)]
    on, off = features(cfg)
    lines.append(f"  features  {', '.join(on) or 'none'}")
    if off:
        lines.append(f"  off       {', '.join(off)}")
    lines.append("  ledger    rows to the store; stderr echo "
                 + ("on" if cfg.access_log else "off") + " (server.access_log)")
    lines.append("  reload    kill -HUP <pid>, or POST /admin/reload with the master key")
    warning = open_warning(cfg, at)
    if warning:
        lines.append(warning)
    return lines


def open_warning(cfg: Config, at: Listening) -> str | None:
    """Said loudly: with no key required, whoever reaches the port spends."""
    if keys_required(cfg.auth):
        return None
    why = ("auth.require_keys is never" if cfg.auth.master_key
           else "no master key is set")
    reach = ("anyone on this machine" if at.host in LOOPBACK
             else f"ANYONE who can reach {at.host}:{at.port}")
    return (f"  WARNING   the gateway is open ({why}): {reach} may call every model, "
            "spending on its providers. Set TOLLWAY_MASTER_KEY (or auth.master_key) to "
            "require keys.")


def store(cfg: Config) -> str:
    st = cfg.store
    if not st.shared:
        return f"embedded (SQLite under {st.path}; one process)"
    return f"shared (Redis {_safe(st.redis_url)}, PostgreSQL {_safe(st.postgres_url)})"


def _safe(url: str | None) -> str:
    """A store URL without its credentials."""
    if not url:
        return "-"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def models(cfg: Config) -> list[str]:
    """`name -> where it goes`, one line per configured alias, then the aliases of
    aliases and the tiers."""
    rows = [*((name, _goes(mc)) for name, mc in sorted(cfg.models.items())),
            *sorted(cfg.aliases.items()),
            *((f"tier:{name}", t.model) for name, t in sorted(cfg.tiers.items()))]
    width = max((len(name) for name, _ in rows), default=0)
    return [f"{name:<{width}}  -> {goes}" for name, goes in rows]


def _goes(mc: ModelConfig) -> str:
    deps = []
    for d in mc.deployments:
        model = "every model" if d.model == "*" else d.model
        where = f" at {_safe(d.api_base)}" if d.api_base else ""
        deps.append(f"{d.provider} {model}{where}")
    text = " | ".join(deps)
    if mc.fallbacks:
        text += f"; fallbacks {', '.join(mc.fallbacks)}"
    return text


def features(cfg: Config) -> tuple[list[str], list[str]]:
    """The optional features on (with what they do) and the ones off."""
    on: list[str] = []
    off: list[str] = []

    def say(name: str, detail: str | None) -> None:
        (on if detail is not None else off).append(
            f"{name} ({detail})" if detail else name)

    aliases = cfg.models
    cached = [a for a, mc in aliases.items() if for_alias(cfg.cache, mc.cache).enabled]
    semantic = any(for_alias(cfg.cache, mc.cache).semantic for mc in aliases.values()
                   if for_alias(cfg.cache, mc.cache).enabled)
    say("cache", _share(cached, aliases, "semantic" if semantic else "exact")
        if cached else None)
    say("guards", _guards(cfg))
    policies = {cfg.history.policy, *(mc.history.policy for mc in aliases.values()
                                      if mc.history is not None and mc.history.policy)}
    policies.discard("none")
    say("history", ", ".join(sorted(policies)) if policies else None)
    say("budgets", _budgets(cfg) or None)
    rl = cfg.rate_limits
    limited = [n for n, lim in (("keys", rl.keys), ("users", rl.users), ("ips", rl.ips))
               if lim.rpm or lim.tpm] + [f"model {m}" for m in rl.models]
    say("rate limits", ", ".join(limited) if limited else None)
    say("tiers", ", ".join(sorted(cfg.tiers)) if cfg.tiers else None)
    turns = [a for a, mc in aliases.items() if mc.route_by_turn is not None]
    say("route by turn", ", ".join(sorted(turns)) if turns else None)
    say("conversations", "server-side memory" if cfg.conversations.enabled else None)
    say("capture", cfg.capture.path if cfg.capture.enabled else None)
    say("alerts", "webhook" if cfg.alerts.webhook_url else "log" if (
        cfg.alerts.hourly_spend_usd is not None) else None)
    return on, off


def _share(names: list[str], aliases: dict[str, ModelConfig], what: str) -> str:
    return what + ("" if len(names) == len(aliases) else f": {', '.join(sorted(names))}")


def _guards(cfg: Config) -> str | None:
    g = cfg.guards
    modes = {("pii", g.pii), ("pii output", g.pii_output), ("injection", g.injection)}
    for mc in cfg.models.values():
        own = mc.guards
        if own is not None:
            modes |= {("pii", own.pii or "off"), ("pii output", own.pii_output or "off"),
                      ("injection", own.injection or "off")}
    shown = sorted(f"{name} {mode}" for name, mode in modes if mode != "off")
    return ", ".join(shown) if shown else None


def _budgets(cfg: Config) -> str:
    b, parts = cfg.budgets, []
    if b.global_:
        parts.append("global")
    for name, level in (("teams", b.teams), ("users", b.users), ("features", b.features)):
        if level:
            parts.append(f"{len(level)} {name if len(level) > 1 else name[:-1]}")
    if b.conversations:
        parts.append("per conversation")
    if b.downgrade:
        parts.append(f"{len(b.downgrade)} downgrade rule{'s' if len(b.downgrade) > 1 else ''}")
    return ", ".join(parts)
