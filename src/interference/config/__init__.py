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
from interference.config.sampling import SamplerName as SamplerName
from interference.config.sampling import SamplingDefaults as SamplingDefaults
from interference.config.storage import ModelPrice as ModelPrice
from interference.config.storage import StorageConfig as StorageConfig
from interference.config.storage import secret_or_env
from interference.config.telemetry import MetricsConfig as MetricsConfig
from interference.config.telemetry import TelemetryConfig as TelemetryConfig

_Model = TypeVar("_Model", bound=BaseModel)

#: the model ``interference serve`` runs when told nothing else (engine/catalog.py knows its file)
DEFAULT_MODEL_ID = "smollm2-135m-instruct"
#: the formats a local model's Q4_1 weights can be converted into (engine/weights.py)
WeightFormat = Literal["shipped", "q8_0", "q4_0"]

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


#: how positions past a model's trained context are handled (engine/llama.py: _rope)
RopeScaling = Literal["auto", "yarn", "none"]


class LocalModelConfig(BaseModel):
    """A ``local`` provider: a GGUF model served in-process by the engine."""

    model_config = _STRICT

    kind: Literal["local"] = Field(default="local", description="a model run in-process")
    model: str = Field(
        default=DEFAULT_MODEL_ID,
        description="a known model name, a GGUF path, or hf:USER/REPO[:QUANT] (a model of "
        "the Hugging Face hub, from its cache)",
    )
    pull: Literal["missing", "never"] = Field(
        default="missing",
        description="an hf: model not in the cache: `interference serve` downloads it "
        "(missing), or stops and says to run `interference pull` (never)",
    )
    id: str | None = Field(default=None, description="public model id (default: from the file)")
    aliases: list[str] = Field(default_factory=list, description="more public names for it")
    # 8 slots: 8 streams get 2x one stream's tokens/s on two cores (bench/README.md, "Slots
    # and context of the local model"). They share one context of 32,768 tokens, so that the
    # first request of Claude Code (28.4k tokens of SmolLM2's) or Codex (8.8k) fits.
    parallel: int = Field(default=8, ge=1, le=64, description="slots decoded together")
    max_queue: int = Field(
        default=16, ge=0, description="requests that may wait for a slot; past it: 429"
    )
    context: int = Field(
        default=32768,
        ge=128,
        description="tokens of context the slots share; one request (prompt and answer) "
        "may use them all",
    )
    default_max_tokens: int | None = Field(
        default=2048,
        ge=1,
        description="max_tokens of a request that sets none, at most context / parallel "
        "(null: until the context is full)",
    )
    rope_scaling: RopeScaling = Field(
        default="auto",
        description="auto/yarn: stretch positions (YaRN) when context passes the model's "
        "trained length; none: do not",
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads (default: all cores)")
    prompt_cache_mib: int = Field(
        default=256, ge=0, description="RAM for reusing earlier prompts' prefixes (0: off)"
    )
    embeddings: bool = Field(default=True, description="serve /v1/embeddings from this model")
    load: Literal["start", "first-use"] = Field(
        default="start", description="load the model at start or on its first request"
    )
    idle_unload_s: float | None = Field(
        default=None, gt=0, description="free the model after this long without requests"
    )
    weights: WeightFormat = Field(
        default="q8_0",
        description="convert Q4_1 weights once into this format before loading (or 'shipped')",
    )
    weights_cache: str | None = Field(
        default=None, description="folder for converted weights (default: the user's cache)"
    )
    sampling: SamplingDefaults | None = Field(
        default=None, description="overrides of the model's tuned sampling defaults"
    )

    @model_validator(mode="after")
    def _slots_the_engine_can_pool(self) -> LocalModelConfig:
        # llama.cpp's pooled embeddings abort the whole process at load (a failed GGML_ASSERT
        # in a matrix product) when the slot count is not a power of two: say so instead.
        if self.embeddings and self.parallel & (self.parallel - 1):
            raise ValueError(
                f"parallel must be a power of two (1, 2, 4, 8, 16, 32 or 64) while embeddings "
                f"are on, not {self.parallel}: llama.cpp's pooled embeddings cannot take "
                f"another count; set `embeddings: false` to use {self.parallel} slots"
            )
        return self


class Timeouts(BaseModel):
    """Bounds on one attempt against a deployment, in seconds."""

    model_config = _STRICT

    connect: float = Field(default=10, gt=0, description="to open a connection")
    first_token: float = Field(default=60, gt=0, description="until the first chunk arrives")
    idle: float = Field(default=60, gt=0, description="longest gap between two chunks")
    total: float = Field(default=600, gt=0, description="the whole answer")


#: the remote provider kinds, the one list of them: each is also the name of the module of
#: ``interference.providers`` that implements it (docs/development.md: adding a kind)
RemoteKind = Literal["openai", "anthropic", "gemini"]


class RemoteProviderConfig(BaseModel):
    """An HTTP API: ``openai`` (any OpenAI-compatible server), ``anthropic`` or ``gemini``."""

    model_config = _STRICT

    kind: RemoteKind = Field(description="the API it speaks")
    base_url: str = Field(description="the API's root, e.g. https://api.openai.com/v1")
    api_key: str | None = Field(
        default=None, description="sent as the API wants it, never in a URL"
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra headers on every upstream request"
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="bounds on each attempt")
    # Each streamed answer holds an HTTP/1.1 connection for as long as it streams: 100 made the
    # 101st of a burst of streams wait, silently, for minutes (issue 18). The bound that matters
    # is the process's file descriptors (raised to its hard limit at start, checked then).
    max_connections: int = Field(
        default=10_000,
        ge=1,
        description="connections to the upstream open at once (each open stream holds one)",
    )
    pool_timeout: float = Field(
        default=1.0,
        gt=0,
        description="seconds a request waits for a free connection; then the next deployment, "
        "else 503 upstream_busy",
    )
    owned_by: str | None = Field(default=None, description="owned_by of its models in /v1/models")
    responses: bool = Field(
        default=False,
        description="openai kind: the upstream serves /v1/responses, which goes to it as written",
    )
    client: Literal["fast", "httpx"] | None = Field(
        default=None,
        description="HTTP client: fast (the default), or httpx, which goes through proxies "
        "and honours HTTPS_PROXY / NO_PROXY / SSL_CERT_FILE (the default with proxy or "
        "ca_bundle)",
    )
    # One setting for the one choice, how the upstream is spoken to: most cloud APIs speak
    # HTTP/2, where hundreds of streams share a connection (issue 18), and https tells by ALPN
    # whether a server does; a plain http:// server cannot be asked, so h2c is opt-in.
    http2: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="HTTP/2 to the upstream: auto (https: if its TLS handshake chooses h2 by "
        "ALPN, decided once at the first connection; http://: HTTP/1.1), always (https: h2; "
        "http://: h2c with prior knowledge), never (HTTP/1.1)",
    )
    proxy: str | None = Field(
        default=None, description="an http:// or https:// proxy to reach the upstream through"
    )
    ca_bundle: str | None = Field(
        default=None, description="PEM file of the authorities that sign the upstream's certificate"
    )

    @model_validator(mode="after")
    def _http_url(self) -> RemoteProviderConfig:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {self.base_url!r}")
        self.base_url = self.base_url.rstrip("/")
        if self.client == "fast" and (self.proxy or self.ca_bundle):
            raise ValueError("proxy and ca_bundle need `client: httpx` (or no `client` at all)")
        if self.proxy is not None and not self.proxy.startswith(("http://", "https://")):
            raise ValueError(f"proxy must start with http:// or https://, not {self.proxy!r}")
        if self.ca_bundle is not None and not Path(self.ca_bundle).expanduser().is_file():
            raise ValueError(f"ca_bundle: no file at {self.ca_bundle!r}")
        return self

    @property
    def http_client(self) -> Literal["fast", "httpx"]:
        """The client the provider talks through."""
        if self.client is not None:
            return self.client
        return "httpx" if self.proxy or self.ca_bundle else "fast"


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
