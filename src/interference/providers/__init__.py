"""Providers: the things that answer requests. One module per provider kind."""

from __future__ import annotations

from collections.abc import Callable

from interference.config import LocalModelConfig, RemoteProviderConfig
from interference.engine import resolve_model
from interference.providers.anthropic import AnthropicProvider
from interference.providers.base import Provider, ServedModel, collect_chunks
from interference.providers.gemini import GeminiProvider
from interference.providers.local import LocalProvider
from interference.providers.openai import OpenAIProvider

#: remote provider kinds by the name a configuration file uses (config.RemoteKind lists them)
REMOTE_KINDS: dict[str, Callable[[str, RemoteProviderConfig], Provider]] = {
    provider.kind: provider for provider in (OpenAIProvider, AnthropicProvider, GeminiProvider)
}


def build_provider(name: str, config: LocalModelConfig | RemoteProviderConfig) -> Provider:
    """The provider a configuration entry declares (a local model file is resolved, not loaded)."""
    if isinstance(config, LocalModelConfig):
        return LocalProvider(name, resolve_model(config.model), config)
    return REMOTE_KINDS[config.kind](name, config)


__all__ = [
    "REMOTE_KINDS",
    "AnthropicProvider",
    "GeminiProvider",
    "LocalProvider",
    "OpenAIProvider",
    "Provider",
    "ServedModel",
    "build_provider",
    "collect_chunks",
]
