"""The providers' configuration: a local GGUF model (``kind: local``) and a remote HTTP API
(``openai``, ``anthropic``, ``gemini``), with the timeouts of an attempt on one."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from interference.config.sampling import SamplingDefaults

_STRICT = ConfigDict(extra="forbid")

#: the model ``interference serve`` runs when told nothing else (engine/catalog.py knows its file)
DEFAULT_MODEL_ID = "smollm2-135m-instruct"
#: the formats a local model's Q4_1 weights can be converted into (engine/weights.py)
WeightFormat = Literal["shipped", "q8_0", "q4_0"]


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
