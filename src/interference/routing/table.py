"""The model table: each public model name with its deployments, and the aliases, built from
the configuration and the providers; a deployment carries its live health and load."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from interference.config import (
    CLIENT_MODEL_PATTERNS,
    OPENAI_ALIASES,
    Config,
    LocalModelConfig,
    RemoteProviderConfig,
    SpeechEngineConfig,
    Timeouts,
    TranscriptionEngineConfig,
)
from interference.providers.base import Provider

#: a local generation may legitimately run long: a prompt of 32k tokens takes about 5 minutes
#: to read on two cores (bench/long_context.py), and a request may first wait for a slot
LOCAL_TIMEOUTS = Timeouts(first_token=900, idle=120, total=3600)


@dataclass(eq=False)
class Deployment:
    """One provider + upstream model id, with its live health and load."""

    provider: Provider
    model: str
    weight: float = 1.0
    max_concurrency: int | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    in_flight: int = 0
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    ttft_ewma: float | None = None
    successes: int = 0
    failures: int = 0
    last_error: str | None = None
    errors: dict[str, int] = field(default_factory=dict)  # failed attempts by error_class

    @property
    def name(self) -> str:
        return f"{self.provider.name}/{self.model}"

    def cooling(self, now: float) -> bool:
        return now < self.cooldown_until

    def saturated(self) -> bool:
        return self.max_concurrency is not None and self.in_flight >= self.max_concurrency

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "deployment": self.name,
            "provider": self.provider.name,
            "model": self.model,
            "weight": self.weight,
            "in_flight": self.in_flight,
            "max_concurrency": self.max_concurrency,
            "healthy": not self.cooling(now),
            "cooldown_remaining_s": round(max(0.0, self.cooldown_until - now), 1),
            "consecutive_failures": self.consecutive_failures,
            "successes": self.successes,
            "failures": self.failures,
            "ttft_ms": None if self.ttft_ewma is None else round(self.ttft_ewma * 1000, 1),
            "last_error": self.last_error,
        }


@dataclass(eq=False)
class PublicModel:
    name: str
    deployments: list[Deployment]
    fallbacks: list[str] = field(default_factory=list)
    owned_by: str = "interference"
    created: int = 0
    rotation: int = 0  # round-robin position
    #: what it is declared to serve (None: whatever its providers serve)
    endpoints: frozenset[str] | None = None

    def serves(self, deployment: Deployment, endpoint: str) -> bool:
        """Whether ``deployment`` of this model answers ``endpoint``."""
        declared = self.endpoints is None or endpoint in self.endpoints
        return declared and endpoint in deployment.provider.endpoints


@dataclass
class ModelTable:
    """The public models by name and the aliases that name them."""

    models: dict[str, PublicModel]
    aliases: dict[str, str]

    @classmethod
    def from_config(cls, config: Config, providers: Sequence[Provider]) -> ModelTable:
        return cls(build_models(config, providers), build_aliases(config, providers))


def build_models(config: Config, providers: Sequence[Provider]) -> dict[str, PublicModel]:
    """Public models: every model a provider serves by itself, then the configured ones."""
    by_name = {p.name: p for p in providers}
    now = int(time.time())
    models: dict[str, PublicModel] = {}
    for provider in providers:
        for served in provider.models():
            deployment = Deployment(
                provider, served.id, max_concurrency=provider.capacity, timeouts=LOCAL_TIMEOUTS
            )
            models[served.id] = PublicModel(
                served.id, [deployment], [], served.owned_by, served.created
            )
    for name, declared in config.models.items():
        deployments = []
        owned_by = declared.owned_by
        for item in declared.deployments:
            provider = by_name[item.provider]
            provider_config = config.providers.get(item.provider)
            own = provider.models()
            timeouts: Timeouts
            limit = item.max_concurrency
            if own:  # a provider of one model (local) serves it whatever the id says
                upstream = own[0].id
                timeouts = item.timeouts or LOCAL_TIMEOUTS
                limit = limit or provider.capacity
            else:
                upstream = item.model or name
                remote = (
                    provider_config if isinstance(provider_config, RemoteProviderConfig) else None
                )
                timeouts = item.timeouts or (remote.timeouts if remote else Timeouts())
            owned_by = owned_by or getattr(provider_config, "owned_by", None) or provider.kind
            deployments.append(Deployment(provider, upstream, item.weight, limit, timeouts))
        models[name] = PublicModel(
            name,
            deployments,
            declared.fallbacks,
            owned_by or "",
            now,
            endpoints=None if declared.endpoints is None else frozenset(declared.endpoints),
        )
    return models


def build_aliases(config: Config, providers: Sequence[Provider]) -> dict[str, str]:
    """Every alias and alias pattern, the configured ones first: patterns are tried in this
    order, so that ``claude-*haiku*`` in a file comes before the default ``claude-*``."""
    aliases: dict[str, str] = dict(config.aliases)
    for provider in providers:
        provider_config = config.providers.get(provider.name)
        local = (LocalModelConfig, SpeechEngineConfig, TranscriptionEngineConfig)
        if isinstance(provider_config, local) and provider.models():
            for alias in provider_config.aliases:
                aliases.setdefault(alias, provider.models()[0].id)
    # the chat names clients send go to the first model that chats (not to a speech engine)
    served = [m.id for p in providers if "chat" in p.endpoints for m in p.models()]
    if config.openai_aliases and served:
        configured = [a.lower() for a in config.aliases if "*" in a or "?" in a or "[" in a]
        for alias in (*OPENAI_ALIASES, *CLIENT_MODEL_PATTERNS):
            if not any(fnmatchcase(alias, pattern) for pattern in configured):  # else it rules
                aliases.setdefault(alias, served[0])
    return aliases
