"""The zero-setup configuration, for when there is no tollway.yaml."""

from __future__ import annotations

import os

from tollway.config.auth import AuthConfig
from tollway.config.models import DeploymentConfig, ModelConfig
from tollway.config.root import Config, check

# With a provider's key in the environment, every model it serves: `openai/gpt-4o`, and
# the unprefixed names the price table (or the name's family) says are its own,
# dated snapshots included (config/wildcards.py).
OPENAI_WILDCARD = "openai/*"
ANTHROPIC_WILDCARD = "anthropic/*"


def embedded_default(env: dict[str, str] | None = None) -> Config:
    """No config: the bundled local model as `local` and `default`; plus every OpenAI /
    Anthropic model when their SDK environment variables are set."""
    env = dict(os.environ) if env is None else env
    models: dict[str, ModelConfig] = {
        "local": ModelConfig([DeploymentConfig(provider="local", model="smollm2-135m")]),
        "local-embed": ModelConfig([DeploymentConfig(provider="local", model="all-MiniLM-L6-v2")]),
    }
    if env.get("OPENAI_API_KEY"):
        base = env.get("OPENAI_BASE_URL") or None
        models[OPENAI_WILDCARD] = ModelConfig([DeploymentConfig(
            provider="openai", model="*", api_base=base, api_key=env["OPENAI_API_KEY"])])
    if env.get("ANTHROPIC_API_KEY"):
        base = env.get("ANTHROPIC_BASE_URL") or None
        models[ANTHROPIC_WILDCARD] = ModelConfig([DeploymentConfig(
            provider="anthropic", model="*", api_base=base,
            api_key=env["ANTHROPIC_API_KEY"])])
    cfg = Config(models=models, aliases={"default": "local"},
                 auth=AuthConfig(master_key=env.get("TOLLWAY_MASTER_KEY") or None))
    check(cfg)
    return cfg
