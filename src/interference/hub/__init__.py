"""Models from a Hugging Face-compatible hub: ``hf:USER/REPO[:QUANT]`` names, the shared hub
cache, and the pull (resolve, download, verify) that fills it.

It sits beside :mod:`interference.upstream`, below the engine: it imports nothing of
interference but the errors (and the version, for its User-Agent). The engine reads the cache
(:func:`interference.engine.catalog.resolve_model`); ``interference pull`` and
``POST /api/pull`` fill it.
"""

from interference.hub.cache import CachedModel, HubCache, cache_dir
from interference.hub.client import HubClient
from interference.hub.download import PullProgress, RemoteFile
from interference.hub.names import HubRef, is_hub_name, parse_hub_name
from interference.hub.pull import Pulled, Puller, PullPlan, offline

__all__ = [
    "CachedModel",
    "HubCache",
    "HubClient",
    "HubRef",
    "PullPlan",
    "PullProgress",
    "Pulled",
    "Puller",
    "RemoteFile",
    "cache_dir",
    "is_hub_name",
    "offline",
    "parse_hub_name",
]
