"""Providers: the things that answer requests. One module per provider kind."""

from interference.providers.base import Provider, ServedModel, collect_chunks
from interference.providers.local import LocalProvider

#: provider kinds by the name a configuration file uses
PROVIDER_KINDS: dict[str, type[Provider]] = {LocalProvider.kind: LocalProvider}

__all__ = ["PROVIDER_KINDS", "LocalProvider", "Provider", "ServedModel", "collect_chunks"]
