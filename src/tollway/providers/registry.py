"""Provider name -> implementation. Adding a provider touches its own file and this map."""

from __future__ import annotations

from tollway.config import Config
from tollway.providers.base import Provider
from tollway.providers.http import Transport


def build_providers(config: Config, transport: Transport) -> dict[str, Provider]:
    from tollway.providers.anthropic import AnthropicProvider
    from tollway.providers.local import LocalProvider
    from tollway.providers.openai import OpenAIProvider

    return {
        "openai": OpenAIProvider(transport),
        "anthropic": AnthropicProvider(transport),
        "local": LocalProvider(config.local),
    }
