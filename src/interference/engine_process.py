"""``--workers N`` with in-process engines: the engines in one process, the workers reach it.

A local model (and the offline speech and transcription engines) must be loaded once: N copies
would take N times the memory and split the cores between N engines. So ``--workers N`` with
such a configuration runs them in one more process, an ``interference serve`` of its own on a
free loopback port, and gives the workers a configuration in which each of those providers is an
``openai`` provider reaching it, under the same name, serving the same public models, aliases and
endpoints. On a 2-core machine the engine's threads and the workers' event loops then share both
cores, where one process would have run every request's Python on one.

The engine process takes requests only with a key made at start (the workers send it), so that
no other program on the machine reaches it; it keeps no usage of its own (the workers account)
and logs only warnings (the workers write each request's line).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from pydantic import SecretStr

from interference.config import (
    Config,
    DeploymentConfig,
    LocalModelConfig,
    PublicModelConfig,
    RemoteProviderConfig,
    Timeouts,
)
from interference.config.media import SpeechEngineConfig, TranscriptionEngineConfig
from interference.providers import build_provider
from interference.routing.table import LOCAL_TIMEOUTS, build_aliases

#: the providers that run inside the process that serves them
IN_PROCESS = (LocalModelConfig, SpeechEngineConfig, TranscriptionEngineConfig)
#: the engine process's requests in flight per key: the workers' one key carries them all
_NO_CLIENT_CAP = 1_000_000


@dataclass(frozen=True)
class ServedByEngine:
    """A public model one of the engine's providers serves."""

    provider: str
    model_id: str
    owned_by: str
    endpoints: tuple[str, ...]


@dataclass(frozen=True)
class EngineSplit:
    """The engine process's configuration, and what the workers' configuration needs of it."""

    engine: Config
    key: str  # what the workers present to it
    served: tuple[ServedByEngine, ...]
    aliases: dict[str, str]  # every alias, as one process would have them

    def for_workers(self, config: Config, port: int) -> Config:
        """``config`` with each in-process provider replaced by the engine at ``port``."""
        providers = dict(config.providers)
        timeouts = Timeouts(
            connect=10,
            first_token=LOCAL_TIMEOUTS.first_token,
            idle=LOCAL_TIMEOUTS.idle,
            total=LOCAL_TIMEOUTS.total,
        )
        by_provider = {s.provider: s for s in self.served}
        for name in in_process(config):
            owned_by = by_provider[name].owned_by if name in by_provider else None
            providers[name] = RemoteProviderConfig(
                kind="openai",
                base_url=f"http://127.0.0.1:{port}/v1",
                api_key=self.key,
                timeouts=timeouts,
                owned_by=owned_by,
            )
        models: dict[str, PublicModelConfig] = {}
        for model in self.served:  # first, as one process lists them
            models[model.model_id] = PublicModelConfig(
                deployments=[DeploymentConfig(provider=model.provider, model=model.model_id)],
                owned_by=model.owned_by,
                endpoints=list(model.endpoints),  # type: ignore[arg-type]
            )
        for name, declared in config.models.items():
            deployments = [
                # a provider of one model serves it whatever the deployment's id says
                d.model_copy(update={"model": by_provider[d.provider].model_id})
                if d.provider in by_provider
                else d
                for d in declared.deployments
            ]
            models[name] = declared.model_copy(update={"deployments": deployments})
        return config.model_copy(
            update={
                "providers": providers,
                "models": models,
                "aliases": self.aliases,
                "openai_aliases": False,  # in self.aliases already, to the same models
            }
        )


def in_process(config: Config) -> list[str]:
    """The providers of ``config`` that run inside the serving process."""
    return [name for name, entry in config.providers.items() if isinstance(entry, IN_PROCESS)]


def split(config: Config) -> EngineSplit:
    """The engine process's half of ``config`` (its in-process providers), resolved without
    loading anything: the public models and aliases they serve."""
    names = in_process(config)
    providers = [build_provider(name, config.providers[name]) for name in names]  # not started
    served = tuple(
        ServedByEngine(p.name, m.id, m.owned_by, tuple(sorted(p.endpoints)))
        for p in providers
        for m in p.models()
    )
    key = f"sk-engine-{secrets.token_urlsafe(24)}"
    level = config.server.log_level
    server = config.server.model_copy(
        update={
            "host": "127.0.0.1",
            "api_keys": [SecretStr(key)],
            "master_key": None,
            "cors_origins": [],
            "log_level": "warning" if level == "info" else level,
            "limits": config.server.limits.model_copy(
                update={"max_concurrent_per_client": _NO_CLIENT_CAP}
            ),
        }
    )
    engine = config.model_copy(
        update={
            "server": server,
            "providers": {name: config.providers[name] for name in names},
            "models": {},
            "aliases": {},
            "openai_aliases": False,
        }
    )
    return EngineSplit(engine, key, served, build_aliases(config, providers))
