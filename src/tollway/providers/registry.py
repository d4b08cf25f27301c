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


def forget_deployments() -> None:
    """Drop what the HTTP providers keep per deployment (URLs, headers, timeouts), for
    deployments made and let go of at run time (wildcard routes); the ones still in
    use are rebuilt on their next call."""
    from tollway.providers import anthropic, http, openai

    for cached in (anthropic._url, anthropic._headers, openai._url, openai._headers,
                   openai._responses_url,
                   http.json_timeout, http.stream_timeout):
        cached.cache_clear()
