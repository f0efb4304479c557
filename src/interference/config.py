"""Configuration: defaults, the YAML file, and the command line, validated at start.

Without a file, interference serves the embedded default model with the usual OpenAI model
names as aliases. A file (``--config PATH`` or ``INTERFERENCE_CONFIG``) may change the server
settings, declare local GGUF models with their aliases and sampling defaults, and add aliases.
Strings may reference environment variables as ``${NAME}``; a wrong field, type or reference
stops the server with a message naming the file, the field and what is expected.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from interference.engine.catalog import DEFAULT_MODEL_ID
from interference.engine.sampling import SamplingDefaults

#: OpenAI model names that, by default, are aliases of the first configured model, so that
#: scripts written for OpenAI work unchanged.
OPENAI_ALIASES: tuple[str, ...] = (
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-16k",
    "gpt-4",
    "gpt-4-turbo",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "o3-mini",
    "o4-mini",
)

_STRICT = ConfigDict(extra="forbid")


class ConfigError(Exception):
    """The configuration is invalid; the message says where and what is expected."""


class ServerConfig(BaseModel):
    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int = Field(default=1337, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class LocalModelConfig(BaseModel):
    """A GGUF model served in-process by the engine."""

    model_config = _STRICT

    model: str = Field(default=DEFAULT_MODEL_ID, description="a known model name or GGUF path")
    id: str | None = Field(default=None, description="public model id (default: from the file)")
    aliases: list[str] = Field(default_factory=list)
    parallel: int = Field(default=4, ge=1, le=64, description="slots decoded together")
    context: int = Field(default=4096, ge=128, description="tokens of context per slot")
    threads: int | None = Field(default=None, ge=1)
    prompt_cache_mib: int = Field(default=256, ge=0)
    sampling: SamplingDefaults | None = None


class Config(BaseModel):
    model_config = _STRICT

    server: ServerConfig = Field(default_factory=ServerConfig)
    models: list[LocalModelConfig] = Field(default_factory=lambda: [LocalModelConfig()])
    openai_aliases: bool = Field(
        default=True, description="serve the usual OpenAI model names as the first model"
    )
    aliases: dict[str, str] = Field(default_factory=dict, description="alias -> model id")

    @model_validator(mode="after")
    def _some_model(self) -> Config:
        if not self.models:
            raise ValueError("at least one model is needed")
        return self


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: Any, where: str) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{where}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def config_from_dict(data: Any, source: str = "configuration") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    try:
        return Config.model_validate(_expand_env(data, source))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML configuration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return config_from_dict(data, str(path))
