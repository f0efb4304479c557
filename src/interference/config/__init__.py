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
from typing import Annotated, Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

# the parts in modules of their own, named here as before
from interference.config.media import AudioEngineConfig as AudioEngineConfig
from interference.config.media import SpeechEngineConfig as SpeechEngineConfig
from interference.config.media import TranscriptionEngineConfig as TranscriptionEngineConfig
from interference.config.providers import DEFAULT_MODEL_ID as DEFAULT_MODEL_ID
from interference.config.providers import LocalModelConfig as LocalModelConfig
from interference.config.providers import RemoteKind as RemoteKind
from interference.config.providers import RemoteProviderConfig as RemoteProviderConfig
from interference.config.providers import RopeScaling as RopeScaling
from interference.config.providers import Timeouts as Timeouts
from interference.config.providers import WeightFormat as WeightFormat
from interference.config.sampling import SamplerName as SamplerName
from interference.config.sampling import SamplingDefaults as SamplingDefaults
from interference.config.storage import ModelPrice as ModelPrice
from interference.config.storage import StorageConfig as StorageConfig
from interference.config.storage import secret_or_env
from interference.config.telemetry import MetricsConfig as MetricsConfig
from interference.config.telemetry import TelemetryConfig as TelemetryConfig

_Model = TypeVar("_Model", bound=BaseModel)

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
#: Patterns of the model names clients and agents send (Codex asks for gpt-5-codex, Claude Code
#: for claude-sonnet-4-5-20250929, SDK examples for text-embedding-3-small): by default they name
#: the first configured model too. Checked after the exact names, in this order.
CLIENT_MODEL_PATTERNS: tuple[str, ...] = (
    "gpt-*",
    "chatgpt-*",
    "o1*",
    "o3*",
    "o4*",
    "codex-*",
    "claude-*",
    "text-embedding-*",
)

_STRICT = ConfigDict(extra="forbid")
#: what a public model may be declared to serve (providers/base.py: Endpoint)
ModelEndpoint = Literal[
    "chat",
    "text",
    "embeddings",
    "speech",
    "transcriptions",
    "translations",
    "images",
    "image_edits",
    "moderations",
]


class ConfigError(Exception):
    """The configuration is invalid; the message says where and what is expected."""


class LimitsConfig(BaseModel):
    """Bounds on what one request or one client may ask; a breach is a 4xx naming the limit."""

    model_config = _STRICT

    max_messages: int = Field(default=2048, ge=1, description="messages in one chat request")
    max_input_chars: int = Field(
        default=1_000_000, ge=1, description="characters of text in one request's input"
    )
    max_tokens: int = Field(
        default=131_072, ge=1, description="highest max_tokens / max_completion_tokens accepted"
    )
    max_concurrent_per_client: int = Field(
        default=128,
        ge=1,
        description="requests in flight per API key (per client address when keys are off)",
    )
    head_timeout_s: float = Field(
        default=10, gt=0, description="to receive a request's line and headers, or be closed"
    )
    body_timeout_s: float = Field(default=30, gt=0, description="to receive a request's body")
    slow_client_s: float = Field(
        default=60, gt=0, description="a stream whose client takes no data this long is ended"
    )


class ResponseStoreConfig(BaseModel):
    """Where ``POST /v1/responses`` keeps the responses it stores (``store`` not false), for
    ``previous_response_id`` and ``GET /v1/responses/{id}``: this process's memory, bounded."""

    model_config = _STRICT

    enabled: bool = Field(
        default=True, description="false: nothing is stored; previous_response_id answers 400"
    )
    ttl_s: float = Field(default=3600, gt=0, description="seconds a stored response is kept")
    max_mib: float = Field(
        default=64, gt=0, description="MiB of stored responses; past it the oldest go first"
    )


class ServerConfig(BaseModel):
    model_config = _STRICT

    host: str = Field(
        default="127.0.0.1", description="address to listen on (loopback: this machine only)"
    )
    port: int = Field(default=1337, ge=0, le=65535, description="port to listen on (0: any free)")
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="largest request body; past it: 413"
    )
    max_upload_bytes: int = Field(
        default=25 * 1000 * 1000,
        ge=1024,
        description="largest upload (audio to transcribe, images to edit); past it: 413",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="info: one line per request, never prompt text or keys"
    )
    log_format: Literal["plain", "json"] = Field(
        default="plain", description="json: one JSON object per line"
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="keys clients must send (also from INTERFERENCE_API_KEYS, comma-separated)",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description='origins allowed to call from a browser ("*": any)'
    )
    shutdown_grace_s: float = Field(
        default=10, ge=0, description="on SIGTERM, in-flight requests get this long to finish"
    )
    keepalive_s: float = Field(
        default=5,
        gt=0,
        description="an agent dialect's stream (Anthropic's) waiting for its first token "
        "sends a keep-alive event this often",
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig, description="per-request and per-client bounds"
    )
    response_store: ResponseStoreConfig = Field(
        default_factory=ResponseStoreConfig,
        description="stored responses of /v1/responses (in memory: lost on restart)",
    )

    master_key: SecretStr | None = Field(
        default=None,
        description="the administrator's key: virtual keys (/key/*, `interference keys`) and "
        "all routes (also from INTERFERENCE_MASTER_KEY)",
    )

    def master(self) -> str | None:
        """The master key, from the configuration or ``INTERFERENCE_MASTER_KEY``."""
        return secret_or_env(self.master_key, "INTERFERENCE_MASTER_KEY")

    def keys(self) -> list[str]:
        """The configured API keys and those of ``INTERFERENCE_API_KEYS``."""
        keys = [key.get_secret_value() for key in self.api_keys]
        keys += [k.strip() for k in os.environ.get("INTERFERENCE_API_KEYS", "").split(",")]
        return [k for k in dict.fromkeys(keys) if k]


ProviderConfig = Annotated[
    LocalModelConfig | RemoteProviderConfig | SpeechEngineConfig | TranscriptionEngineConfig,
    Field(discriminator="kind"),
]


class DeploymentConfig(BaseModel):
    """One way to answer a public model: a provider and the upstream model id there."""

    model_config = _STRICT

    provider: str = Field(description="a provider's name (a key of `providers`)")
    model: str | None = Field(default=None, description="upstream id (default: the public name)")
    weight: float = Field(default=1.0, gt=0, description="share of requests (least-busy)")
    max_concurrency: int | None = Field(
        default=None, ge=1, description="requests in flight at most (default: no bound)"
    )
    timeouts: Timeouts | None = Field(default=None, description="default: the provider's")


class PublicModelConfig(BaseModel):
    model_config = _STRICT

    deployments: list[DeploymentConfig] = Field(
        min_length=1, description="ways to answer it, tried by the routing strategy"
    )
    fallbacks: list[str] = Field(default_factory=list, description="models tried after these")
    owned_by: str | None = Field(default=None, description="owned_by in /v1/models")
    endpoints: list[ModelEndpoint] | None = Field(
        default=None,
        description="what it serves, of chat, text, embeddings, speech, transcriptions, "
        "translations, images, image_edits, moderations (default: all its providers can)",
    )


class RetryConfig(BaseModel):
    model_config = _STRICT

    attempts_per_deployment: int = Field(
        default=1, ge=1, le=10, description="tries of one deployment before the next"
    )
    backoff_initial: float = Field(
        default=0.25, ge=0, description="seconds before the first retry (doubling, jittered)"
    )
    backoff_max: float = Field(default=8.0, ge=0, description="longest wait between retries")
    retry_after_max: float = Field(default=30.0, ge=0, description="longest Retry-After honoured")


class CooldownConfig(BaseModel):
    model_config = _STRICT

    failures: int = Field(default=3, ge=1, description="consecutive failures that trip it")
    seconds: float = Field(
        default=30.0, gt=0, description="how long a tripped deployment is skipped"
    )


class RoutingConfig(BaseModel):
    model_config = _STRICT

    strategy: Literal["least-busy", "round-robin", "latency", "ordered"] = Field(
        default="least-busy", description="how a model's deployments are ordered per request"
    )
    max_attempts: int = Field(default=4, ge=1, le=50, description="attempts per request in all")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="retries of one deployment")
    cooldown: CooldownConfig = Field(
        default_factory=CooldownConfig, description="the breaker of failing deployments"
    )


def _default_providers() -> dict[str, ProviderConfig]:
    return {"local": LocalModelConfig()}


class Config(BaseModel):
    model_config = _STRICT

    server: ServerConfig = Field(default_factory=ServerConfig, description="the HTTP server")
    providers: dict[str, ProviderConfig] = Field(
        default_factory=_default_providers,
        description="what answers, by name: local models, HTTP APIs and offline audio engines",
    )
    models: dict[str, PublicModelConfig] = Field(
        default_factory=dict, description="public model names and their deployments"
    )
    openai_aliases: bool = Field(
        default=True,
        description="serve the model names clients send (gpt-*, o3*, codex-*, claude-*, "
        "text-embedding-*...) as the first local model",
    )
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="alias -> model name; an alias with * or ? is a pattern (claude-*haiku*)",
    )
    routing: RoutingConfig = Field(
        default_factory=RoutingConfig, description="strategy, retries and cooldown"
    )
    storage: StorageConfig = Field(
        default_factory=StorageConfig, description="the database of virtual keys and usage"
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="USD per million tokens by upstream model id or public name (over the "
        "built-in list; local models cost 0)",
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="GET /metrics and the recent figures"
    )
    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig, description="OpenTelemetry traces (off by default)"
    )

    @model_validator(mode="after")
    def _references(self) -> Config:
        if not self.providers:
            raise ValueError("at least one provider is needed")
        for name, model in self.models.items():
            for i, deployment in enumerate(model.deployments):
                if deployment.provider not in self.providers:
                    known = ", ".join(sorted(self.providers))
                    raise ValueError(
                        f"models.{name}.deployments.{i}.provider: `{deployment.provider}` is not "
                        f"a configured provider (known: {known})"
                    )
        return self

    @property
    def local_providers(self) -> dict[str, LocalModelConfig]:
        return {k: v for k, v in self.providers.items() if isinstance(v, LocalModelConfig)}


_PROVIDER_KINDS = {"local", "espeak", "whisper", *get_args(RemoteKind)}
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
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors(include_url=False):
        loc = list(item["loc"])
        if len(loc) > 2 and loc[0] == "providers" and loc[2] in _PROVIDER_KINDS:
            del loc[2]  # the union member pydantic tried, not a field
        field = ".".join(str(part) for part in loc) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
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
        return Config.model_validate(_expand_env(data, ""))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def with_updates(model: _Model, updates: dict[str, Any], source: str) -> _Model:
    """``model`` with ``updates`` (those not None) applied and validated like a file's values."""
    changes = {key: value for key, value in updates.items() if value is not None}
    if not changes:
        return model
    try:
        return type(model).model_validate({**model.model_dump(), **changes})
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
