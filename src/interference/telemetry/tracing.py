"""OpenTelemetry traces, opt-in: ``telemetry.otlp_endpoint``, or OpenTelemetry's own
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``.

- One SERVER span per HTTP request, named ``{method} {route}`` (``POST /v1/chat/completions``),
  with ``http.*`` attributes and ``interference.request_id``. A client's W3C ``traceparent``
  (and ``tracestate``) makes it a child in the client's trace.
- One span per upstream attempt, a child of the request's: ``{gen_ai.operation.name}
  {gen_ai.request.model}`` (``chat gpt-4o-mini``), kind CLIENT (INTERNAL for the in-process
  model), with the GenAI semantic conventions' attributes: operation, provider, requested and
  answering model, usage tokens, finish reasons. A failed attempt has ``error.type`` (the closed
  vocabulary of :func:`interference.errors.error_class`) and status ERROR. A stream's attempt
  span lasts until the stream ends.
- The upstream request carries the attempt span's ``traceparent``
  (:mod:`interference.telemetry.propagation`).

No prompt or answer text goes into a span unless ``telemetry.capture_content`` is on: then an
attempt span has ``gen_ai.input.messages`` and ``gen_ai.output.messages`` (JSON in the GenAI
conventions' shape; a warning at start says it is on). Nothing of OpenTelemetry is imported
unless an endpoint is configured; without one :func:`make_tracer` returns None and the guard and
the router skip their hooks. Spans leave in batches (``BatchSpanProcessor``) over OTLP/HTTP
protobuf, from the SDK's own thread; :meth:`Tracer.shutdown` sends what is left.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

from interference.config import ConfigError
from interference.config.telemetry import TelemetryConfig
from interference.errors import error_class
from interference.telemetry.propagation import UPSTREAM_TRACE

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

logger = logging.getLogger("interference.telemetry")

#: ``gen_ai.provider.name`` by provider kind (others go as their kind)
PROVIDER_NAMES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "local": "llama_cpp",
}
#: ``gen_ai.operation.name`` by the router's endpoint
OPERATION_NAMES = {"chat": "chat", "text": "text_completion", "embeddings": "embeddings"}
#: probes and scrapes: no span
UNTRACED = frozenset({"/health", "/v1/health", "/metrics"})
_TRACE_HEADERS = (b"traceparent", b"tracestate")
_INSTALL = "pip install 'interference[otel]'"


class RequestFacts(Protocol):
    """What the request span reads of a finished request (the guard's ``RequestRecord``)."""

    status: int
    model: str | None
    deployment: str | None
    attempts: int | None
    stream: bool | None
    prompt_tokens: int | None
    completion_tokens: int | None
    outcome: str | None
    error: str | None


def traces_url(config: TelemetryConfig) -> str | None:
    """Where spans are POSTed: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as it is (the signal's
    own variable is a whole URL), else the configured or ``OTEL_EXPORTER_OTLP_ENDPOINT`` base
    URL with ``/v1/traces`` (unless it already ends so); None: no tracing."""
    endpoint = config.endpoint()
    if endpoint is None:
        return None
    if not config.otlp_endpoint and endpoint == os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        return endpoint
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def make_tracer(config: TelemetryConfig) -> Tracer | None:
    """The tracer for ``config``, or None when no endpoint is configured (then nothing of
    OpenTelemetry is imported). A ``ConfigError`` when an endpoint is set but OpenTelemetry's
    packages are not installed."""
    url = traces_url(config)
    return None if url is None else Tracer(config, url)


def _version() -> str:
    try:
        return metadata.version("interference")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare source tree
        return "0"


class Tracer:
    """Starts the spans the guard (:meth:`request`) and the router (:meth:`attempt`) ask for."""

    def __init__(self, config: TelemetryConfig, url: str) -> None:
        try:
            from opentelemetry import context as otel_context
            from opentelemetry import trace
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as missing:
            raise ConfigError(
                f"telemetry: traces need OpenTelemetry's SDK and OTLP exporter "
                f"({missing.name or 'a module'} is missing): {_INSTALL}"
            ) from None
        version = _version()
        resource = Resource.create(
            {"service.name": config.service_name, "service.version": version}
        )
        self.provider: TracerProvider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        self._tracer = self.provider.get_tracer("interference", version)
        self._propagator = TraceContextTextMapPropagator()
        self._attach = otel_context.attach
        self._detach = otel_context.detach
        self._with_span = trace.set_span_in_context
        self._server, self._client, self._internal = (
            trace.SpanKind.SERVER,
            trace.SpanKind.CLIENT,
            trace.SpanKind.INTERNAL,
        )
        where = urllib.parse.urlsplit(url)
        logger.info(
            "traces go to %s://%s%s (OTLP/HTTP)",
            where.scheme,
            where.hostname,
            f":{where.port}" if where.port else "",
        )
        #: prompts and answers in the attempt spans (telemetry.capture_content; off: never)
        self.capture = config.capture_content
        if self.capture:
            logger.warning(
                "telemetry.capture_content is on: prompts and answers go into the traces"
            )

    def request(self, scope: Mapping[str, Any], request_id: str) -> RequestSpan | None:
        """Start the span of the HTTP request of ``scope`` (an ASGI scope) and make it the
        current one; None for health probes and scrapes."""
        path: str = scope["path"]
        if path in UNTRACED:
            return None
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in _TRACE_HEADERS:
                carrier[name.decode("latin-1")] = value.decode("latin-1")
        parent: Context | None = self._propagator.extract(carrier) if carrier else None
        method: str = scope["method"]
        span = self._tracer.start_span(
            method,
            context=parent,
            kind=self._server,
            attributes={
                "http.request.method": method,
                "url.path": path,
                "url.scheme": scope.get("scheme", "http"),
                "interference.request_id": request_id,
            },
        )
        token = self._attach(self._with_span(span, parent))
        return RequestSpan(span, method, token, self._detach)

    def attempt(
        self,
        endpoint: str,
        provider_kind: str,
        request_model: str,
        *,
        deployment: str,
        model: str,
        stream: bool,
        request: object = None,
    ) -> AttemptSpan:
        """Start the span of one upstream attempt (a child of the current span): ``endpoint``
        is the router's (``chat``, ``text``, ``embeddings``), ``request_model`` the model id
        asked of the provider, ``model`` the public model it serves."""
        operation = OPERATION_NAMES.get(endpoint, endpoint)
        span = self._tracer.start_span(
            f"{operation} {request_model}",
            kind=self._internal if provider_kind == "local" else self._client,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": PROVIDER_NAMES.get(provider_kind, provider_kind),
                "gen_ai.request.model": request_model,
                "gen_ai.request.stream": stream,
                "interference.deployment": deployment,
                "interference.model": model,
            },
        )
        if self.capture and request is not None:
            messages = input_messages(request)
            if messages:
                span.set_attribute("gen_ai.input.messages", json.dumps(messages))
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._with_span(span))
        return AttemptSpan(span, tuple(carrier.items()), self.capture)

    def shutdown(self) -> None:
        """Send the spans not yet sent and stop (blocks: call it off the event loop)."""
        self.provider.shutdown()

    def force_flush(self) -> bool:
        return self.provider.force_flush()


class RequestSpan:
    """The span of one HTTP request, current from its start until :meth:`finish`."""

    __slots__ = ("_detach", "_method", "_span", "_token")

    def __init__(
        self, span: Span, method: str, token: object, detach: Callable[[Any], None]
    ) -> None:
        self._span = span
        self._method = method
        self._token = token
        self._detach = detach

    def finish(self, record: RequestFacts, scope: Mapping[str, Any]) -> None:
        """End it with what the request became (call it in the task that started it)."""
        span = self._span
        try:
            route = getattr(scope.get("route"), "path", None)
            attributes: dict[str, str | bool | int] = {"http.response.status_code": record.status}
            if isinstance(route, str):
                span.update_name(f"{self._method} {route}")
                attributes["http.route"] = route
            for name, value in (
                ("interference.model", record.model),
                ("interference.deployment", record.deployment),
                ("interference.attempts", record.attempts),
                ("interference.stream", record.stream),
                ("interference.outcome", record.outcome),
                ("interference.prompt_tokens", record.prompt_tokens),
                ("interference.completion_tokens", record.completion_tokens),
            ):
                if value is not None:
                    attributes[name] = value
            span.set_attributes(attributes)
            if record.status >= 500:
                _fail(span, record.error or str(record.status))
            span.end()
        finally:
            self._detach(self._token)


class AttemptSpan:
    """The span of one upstream attempt; the router reports what came back."""

    __slots__ = (
        "_ended", "_finish", "_headers", "_input", "_model", "_output", "_span", "_texts",
    )  # fmt: skip

    def __init__(
        self, span: Span, headers: tuple[tuple[str, str], ...], capture: bool = False
    ) -> None:
        self._span = span
        self._headers = headers
        #: the answer's text per choice, when content is captured (None: it is not)
        self._texts: dict[int, list[str]] | None = {} if capture else None
        self._ended = False
        self._model: str | None = None
        self._finish: list[str] = []
        self._input: int | None = None
        self._output: int | None = None

    def enter(self) -> contextvars.Token[tuple[tuple[str, str], ...]]:
        """From now on, upstream requests in this context carry this span's trace context."""
        return UPSTREAM_TRACE.set(self._headers)

    @staticmethod
    def leave(token: contextvars.Token[tuple[tuple[str, str], ...]]) -> None:
        UPSTREAM_TRACE.reset(token)

    def answered(self, result: object) -> None:
        """A whole answer came back: read it, and end."""
        self._read(result)
        self.end()

    def saw(self, batch: Iterable[object]) -> None:
        """Streamed chunks, before they are relayed (and stamped with the public name)."""
        for chunk in batch:
            self._read(chunk)

    def failed(self, error: BaseException) -> None:
        """The attempt failed: ``error.type``, status ERROR, and end."""
        if self._ended:
            return
        kind = "cancelled" if isinstance(error, asyncio.CancelledError) else error_class(error)
        _fail(self._span, kind)
        self.end()

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        span = self._span
        if self._model is not None:
            span.set_attribute("gen_ai.response.model", self._model)
        if self._finish:
            span.set_attribute("gen_ai.response.finish_reasons", self._finish)
        if self._input is not None:
            span.set_attribute("gen_ai.usage.input_tokens", self._input)
        if self._output is not None:
            span.set_attribute("gen_ai.usage.output_tokens", self._output)
        if self._texts:
            finish = self._finish
            span.set_attribute(
                "gen_ai.output.messages",
                json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": "".join(parts)}],
                            **({"finish_reason": finish[i]} if i < len(finish) else {}),
                        }
                        for i, parts in sorted(self._texts.items())
                    ]
                ),
            )
        span.end()

    def _read(self, answer: object) -> None:
        """The model, finish reasons and usage of an answer or chunk: an upstream's JSON kept
        as it came (``.data``) or a pydantic model; what it lacks stays unknown."""
        data = getattr(answer, "data", None)
        if isinstance(data, dict):
            model, choices, usage = data.get("model"), data.get("choices"), data.get("usage")
        else:
            model = getattr(answer, "model", None)
            choices = getattr(answer, "choices", None)
            usage = getattr(answer, "usage", None)
        if self._model is None and isinstance(model, str) and model:
            self._model = model
        if isinstance(choices, list):
            texts = self._texts
            for choice in choices:
                finish = _field(choice, "finish_reason")
                if isinstance(finish, str) and finish:
                    self._finish.append(finish)
                if texts is not None:
                    said = _field(choice, "message") or _field(choice, "delta")
                    text = _field(said, "content") if said is not None else _field(choice, "text")
                    if isinstance(text, str) and text:
                        index = _field(choice, "index")
                        texts.setdefault(index if isinstance(index, int) else 0, []).append(text)
        if usage is not None:
            prompt = _field(usage, "prompt_tokens")
            completion = _field(usage, "completion_tokens")
            if isinstance(prompt, int):
                self._input = prompt
            if isinstance(completion, int):
                self._output = completion


def _field(obj: object, name: str) -> object:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _fail(span: Span, kind: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, kind))


def input_messages(request: object) -> list[dict[str, Any]]:
    """A request's prompt in the GenAI conventions' shape (``{role, parts: [{type: "text",
    content}]}``): chat messages, or a completion's prompt; other parts by their type only."""
    messages = getattr(request, "messages", None)
    if isinstance(messages, list):
        shaped = []
        for message in messages:
            data = message.model_dump(mode="json") if hasattr(message, "model_dump") else message
            if not isinstance(data, dict):
                continue
            content = data.get("content")
            parts: list[dict[str, Any]] = []
            if isinstance(content, str):
                parts.append({"type": "text", "content": content})
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "text":
                        parts.append({"type": "text", "content": part.get("text", "")})
                    elif isinstance(part, dict):
                        parts.append({"type": str(part.get("type", "other"))})
            for call in data.get("tool_calls") or []:
                function = call.get("function") or {}
                parts.append({"type": "tool_call", "id": call.get("id"),
                              "name": function.get("name"),
                              "arguments": function.get("arguments")})  # fmt: skip
            shaped.append({"role": str(data.get("role", "user")), "parts": parts})
        return shaped
    prompt = getattr(request, "prompt", None)
    if prompt is not None:
        text = prompt if isinstance(prompt, str) else json.dumps(prompt)
        return [{"role": "user", "parts": [{"type": "text", "content": text}]}]
    return []
