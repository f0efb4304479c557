"""Where virtual keys, the usage ledger and the shared counters live (``storage``), and what
tokens cost (``prices``)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

_STRICT = ConfigDict(extra="forbid")


def secret_or_env(secret: SecretStr | None, variable: str) -> str | None:
    """A secret of the configuration, else the environment variable ``variable`` (an empty
    value in either is none)."""
    if secret is not None:
        return secret.get_secret_value() or None
    return os.environ.get(variable) or None


class ModelPrice(BaseModel):
    """A model's price in USD per million tokens."""

    model_config = _STRICT

    input: float = Field(ge=0, description="USD per million prompt tokens")
    output: float = Field(ge=0, description="USD per million completion tokens")
    cached_input: float | None = Field(
        default=None, ge=0, description="USD per million cached prompt tokens (default: input)"
    )


class StorageConfig(BaseModel):
    """Where virtual keys and the usage ledger are kept (used when the server has a master
    key)."""

    model_config = _STRICT

    path: str | None = Field(
        default=None,
        description="SQLite file (default: $XDG_DATA_HOME/interference/interference.db); "
        "unused when `url` names PostgreSQL",
    )
    refresh_s: float = Field(
        default=2,
        gt=0,
        description="how often each process writes usage rows and re-reads the keys",
    )
    retention_days: float = Field(
        default=90, gt=0, description="usage rows older than this are removed (the rollup stays)"
    )
    url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL instead of SQLite, for replicas: postgresql://user:pass@host/db "
        "(also from INTERFERENCE_STORAGE_URL)",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis for the counters replicas share (rate windows, parallel requests, "
        "budget reservations): redis://host:6379/0 (also from INTERFERENCE_REDIS_URL); "
        "without it each process counts on its own",
    )
    timeout_s: float = Field(
        default=10, gt=0, description="longest wait for a PostgreSQL statement (background work)"
    )
    redis_timeout_s: float = Field(
        default=0.5,
        gt=0,
        description="longest wait for Redis on a request; past it the counters are down",
    )
    budgets_when_down: Literal["closed", "open"] = Field(
        default="closed",
        description="while the shared counters or the database cannot be reached: refuse "
        "requests of keys with a budget (closed, 503) or admit them on this process's counts",
    )

    def database_url(self) -> str | None:
        """``url``, or ``INTERFERENCE_STORAGE_URL``."""
        return secret_or_env(self.url, "INTERFERENCE_STORAGE_URL")

    def redis(self) -> str | None:
        """``redis_url``, or ``INTERFERENCE_REDIS_URL``."""
        return secret_or_env(self.redis_url, "INTERFERENCE_REDIS_URL")
