"""Provider name -> implementation. Adding a provider touches its own file and this map."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tollway.config import Config
from tollway.providers.base import Provider
from tollway.providers.http import Transport

if TYPE_CHECKING:
    from tollway.providers.local import SentenceModel


def build_providers(config: Config, transport: Transport,
                    sentence_model: Callable[[], SentenceModel] | None = None
                    ) -> dict[str, Provider]:
    """`sentence_model`: the local embedding model, loaded on first use."""
    from tollway.providers.anthropic import AnthropicProvider
    from tollway.providers.local import LocalProvider
    from tollway.providers.openai import OpenAIProvider

    return {
        "openai": OpenAIProvider(transport),
        "anthropic": AnthropicProvider(transport),
        "local": LocalProvider(config.local, sentence_model),
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
