"""The zero-setup configuration, for when there is no tollway.yaml."""

from __future__ import annotations

import os

from tollway.config.auth import AuthConfig
from tollway.config.models import DeploymentConfig, ModelConfig
from tollway.config.root import Config, check

OPENAI_DEFAULT_MODELS = ("gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini",
                         "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini", "o4-mini", "o3")
ANTHROPIC_DEFAULT_MODELS = ("claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5",
                            "claude-sonnet-4-0", "claude-3-5-haiku-latest")


def embedded_default(env: dict[str, str] | None = None) -> Config:
    """No config: the bundled local model as `local` and `default`; plus the usual
    OpenAI / Anthropic models when their SDK environment variables are set."""
    env = dict(os.environ) if env is None else env
    models: dict[str, ModelConfig] = {
        "local": ModelConfig([DeploymentConfig(provider="local", model="smollm2-135m")]),
        "local-embed": ModelConfig([DeploymentConfig(provider="local", model="all-MiniLM-L6-v2")]),
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
    check(cfg)
    return cfg
