"""Providers: the things that answer requests. One module per provider kind.

A remote kind's name in ``config.RemoteKind`` is the name of its module here, which holds the
one :class:`~interference.providers.http.HTTPProvider` subclass whose ``kind`` is that name:
adding a kind is that module and that one name (docs/development.md, "Adding a provider kind").
"""

from __future__ import annotations

import importlib
from typing import get_args

from interference.config import (
    LocalModelConfig,
    RemoteKind,
    RemoteProviderConfig,
    SpeechEngineConfig,
    TranscriptionEngineConfig,
)
from interference.engine import resolve_model
from interference.providers.anthropic import AnthropicProvider
from interference.providers.base import Provider, ServedModel, collect_chunks
from interference.providers.gemini import GeminiProvider
from interference.providers.http import HTTPProvider
from interference.providers.local import LocalProvider
from interference.providers.local_audio import SpeechEngineProvider, TranscriptionEngineProvider
from interference.providers.openai import OpenAIProvider


def _remote_kinds() -> dict[str, type[HTTPProvider]]:
    """Each name of ``config.RemoteKind`` with the provider class of its module."""
    kinds: dict[str, type[HTTPProvider]] = {}
    for kind in get_args(RemoteKind):
        module = importlib.import_module(f"{__name__}.{kind}")
        found = [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, HTTPProvider)
            and getattr(value, "kind", None) == kind
        ]
        if len(found) != 1:
            raise ImportError(f"{module.__name__} must define one HTTPProvider of kind {kind!r}")
        kinds[kind] = found[0]
    return kinds


#: remote provider kinds by the name a configuration file uses
REMOTE_KINDS: dict[str, type[HTTPProvider]] = _remote_kinds()


def build_provider(
    name: str,
    config: LocalModelConfig
    | RemoteProviderConfig
    | SpeechEngineConfig
    | TranscriptionEngineConfig,
) -> Provider:
    """The provider a configuration entry declares (a local model file is resolved, not loaded)."""
    if isinstance(config, LocalModelConfig):
        return LocalProvider(name, resolve_model(config.model), config)
    if isinstance(config, SpeechEngineConfig):
        return SpeechEngineProvider(name, config)
    if isinstance(config, TranscriptionEngineConfig):
        return TranscriptionEngineProvider(name, config)
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
