"""The embedded llama.cpp engine (through ``xllamacpp``), with its async edge.

``xllamacpp.Server`` runs llama.cpp's native server engine in-process: continuous batching over
``parallel`` slots, prompt cache, the GGUF's jinja chat template. Its ``handle_*`` calls block
and release the GIL; this module runs them on a dedicated thread pool and hands their results
to asyncio. Streaming chunks come from an engine thread through a callback that queues them on
the event loop; the callback's ``True`` return value stops generation, which is how a client
that went away frees its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from interference.config import RopeScaling, WeightFormat
from interference.engine.choices import merge_results, merge_streams, one_choice_payloads
from interference.engine.context_gate import ContextGate
from interference.engine.weights import prepare_weights, trained_context
from interference.errors import (
    ContextFullError,
    ContextLengthExceededError,
    InterferenceError,
    InvalidRequestError,
    ModelNotReadyError,
    NotFoundError,
    ServerError,
)

logger = logging.getLogger(__name__)

_END = object()


@dataclass(frozen=True)
class EngineSettings:
    """How one GGUF model is run."""

    path: Path
    parallel: int = 8
    context: int = 32768  # tokens the slots share; one request may use them all
    rope_scaling: RopeScaling = "auto"  # past the trained context: YaRN (see _rope)
    threads: int | None = None
    prompt_cache_mib: int = 256
    embeddings: bool = True  # also serve /v1/embeddings (mean pooling)
    verbose: bool = False
    weights: WeightFormat = "shipped"  # convert Q4_1 tensors once before loading (weights.py)
    weights_cache: Path | None = None  # where conversions are kept (default: the user cache)


#: what llama.cpp answers every request in flight when their KV cells, together, passed the
#: shared context (server_context.cpp, when llama_decode finds no room even for one token)
_POOL_FULL = "Context size has been exceeded"


def engine_error(error: dict[str, Any], context: int | None = None) -> InterferenceError:
    """Translate an error object of llama.cpp's server into our exception hierarchy
    (``context``: the engine's tokens of context, named in a context-size refusal)."""
    message = str(error.get("message") or "the engine rejected the request")
    kind = error.get("type")
    code = error.get("code")
    if _POOL_FULL in message:
        return ContextFullError(
            "The local model's context, which its slots share, filled up with requests "
            "running at once; retry the request."
        )
    if kind == "exceed_context_size_error":
        if context is not None:
            message = message.rstrip(". ") + "."  # llama.cpp's text ends without a period
            message += (
                f" This local model has {context} tokens of context per request (prompt and "
                "answer): the `context` setting of its provider (`--context`) raises it."
            )
        return ContextLengthExceededError(message, param="messages")
    if code == 400 or kind == "invalid_request_error":
        # llama.cpp names the field it refuses: "Field 'repeat_last_n': Value must be..."
        field = re.match(r"Field '([A-Za-z0-9_]+)'", message)
        return InvalidRequestError(message, param=field.group(1) if field else None)
    if code == 501 or kind == "not_supported_error":
        return InvalidRequestError(message, code="unsupported")
    if code == 404 or kind == "not_found_error":
        return NotFoundError(message)
    if code == 503 or kind == "unavailable_error":
        return ModelNotReadyError(message)
    return ServerError(f"engine error: {message}")


#: what llama.cpp's request handlers throw (as Cython maps C++ exceptions) while they read a
#: request: std::invalid_argument (ValueError), nlohmann::json's type and parse errors and
#: std::runtime_error from a tool or template parser (RuntimeError), std::out_of_range
#: (IndexError). Out of memory (MemoryError) and anything else stays a fault of ours.
_REQUEST_REFUSALS = (ValueError, RuntimeError, IndexError, KeyError, TypeError)
_MAX_REFUSAL_CHARS = 400


def refused_request(exc: BaseException, produced: bool) -> InterferenceError:
    """The error for an exception raised by one of the engine's request handlers.

    Before a handler produces anything it only parses and checks the request (its tools,
    tool_choice, response_format and JSON schemas, the chat template over the messages), so an
    exception then is the engine refusing the request: a 400 carrying its message, as
    llama-server itself answers. Once output was produced, or for other exceptions, it is a
    genuine fault: a 500.
    """
    if produced or not isinstance(exc, _REQUEST_REFUSALS):
        return ServerError(f"engine failure: {exc}")
    lines = str(exc).strip().splitlines()
    detail = lines[0] if lines else type(exc).__name__
    if len(detail) > _MAX_REFUSAL_CHARS:
        detail = detail[:_MAX_REFUSAL_CHARS] + "..."
    return InvalidRequestError(f"The model cannot take this request: {detail}")


def _has_output(chunk: dict[str, Any]) -> bool:
    """Whether an engine chunk carries output: text, a tool call, reasoning or a finish."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if choice.get("text") or choice.get("finish_reason"):
            return True
        if delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"):
            return True
    return False


def rope_factor(settings: EngineSettings, trained: int | None) -> float | None:
    """How far positions are stretched: ``context / trained`` when the context passes the
    model's trained length and scaling is on (``auto`` or ``yarn``), else none."""
    if settings.rope_scaling == "none" or not trained or settings.context <= trained:
        return None
    return settings.context / trained


def _rope(params: Any, settings: EngineSettings, path: Path) -> int:
    """Stretch positions with YaRN when the context passes the model's trained length, so that
    one request may use the whole context; the tokens one request may use. Without scaling
    llama.cpp holds each request to the trained length. bench/long_context.py measures what
    scaling costs (keys found in a long text) and gives (requests past the trained length)."""
    import xllamacpp

    trained = trained_context(path)
    factor = rope_factor(settings, trained)
    if factor is None or trained is None:
        if trained and settings.context > trained:
            logger.warning(
                "context %d without rope scaling: one request may use %d tokens, the length "
                "the model was trained for; the slots share the rest",
                settings.context,
                trained,
            )
            return trained
        return settings.context
    params.rope_scaling_type = xllamacpp.llama_rope_scaling_type.LLAMA_ROPE_SCALING_TYPE_YARN
    params.rope_freq_scale = 1 / factor
    params.yarn_orig_ctx = trained
    logger.info(
        "context %d passes the %d the model was trained for: YaRN x%.2g",
        settings.context,
        trained,
        factor,
    )
    return settings.context


class LlamaEngine:
    """One loaded GGUF model served by llama.cpp's engine."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self._server: Any = None
        self._load_lock = threading.Lock()
        workers = max(32, settings.parallel * 8)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine")
        #: tokens one request may use (prompt and answer): the context, or the trained length
        self.request_limit = settings.context
        self.gate = ContextGate()  # shared and alone runs over the one context (context_gate.py)
        self._active: set[threading.Event] = set()
        #: engine calls running now, and when the last one started (for idle unloading)
        self.in_flight = 0
        self.last_used = time.monotonic()
        # The engine opens its own HTTP listener on a random loopback port; a random key
        # keeps anyone from generating through it around the gateway.
        self._internal_key = secrets.token_urlsafe(24)
        self.internal_url: str | None = None
        #: whether the model's chat template has a native tool-call format
        self.supports_tools = False
        #: the file actually loaded (a converted copy when ``weights`` asks for one)
        self.loaded_path: Path | None = None

    @property
    def ready(self) -> bool:
        return self._server is not None

    def _params(self, path: Path) -> Any:
        import xllamacpp

        s = self.settings
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_parallel = s.parallel
        # One pool of `context` tokens for all slots (llama.cpp's unified KV cache): an agent's
        # 28k-token prompt fits, and the memory is that of one such prompt, not of eight.
        # When the pool is full, llama.cpp frees idle slots' cached prompts first.
        params.n_ctx = s.context
        params.kv_unified = True
        self.request_limit = _rope(params, s, path)
        params.ctx_shift = False  # a full context ends generation ("length"), never loops
        params.n_predict = -1
        params.cache_ram_mib = s.prompt_cache_mib
        params.port = 0
        params.api_keys = [self._internal_key]
        params.endpoint_metrics = True
        params.verbosity = 1 if s.verbose else -1
        params.warmup = True
        if s.embeddings:
            params.embedding = True
            params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        threads = s.threads or os.cpu_count() or 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        return params

    def load(self) -> None:
        """Load the model (blocking; about a second for a 100 MB model, plus a few seconds
        the first time a weight conversion is asked for)."""
        with self._load_lock:
            if self._server is not None:
                return
            import xllamacpp

            s = self.settings
            path = prepare_weights(s.path, s.weights, s.weights_cache)
            try:
                self._server = xllamacpp.Server(self._params(path))
            except Exception as exc:  # xllamacpp raises RuntimeError with no detail
                raise ServerError(f"cannot load model {self.settings.path.name}: {exc}") from exc
            self.loaded_path = path
            # a fresh load counts as use: the idle watcher must not free it before the
            # request that asked for it begins
            self.last_used = time.monotonic()
            self.internal_url = str(self._server.listening_address)
            logger.debug("engine for %s listening at %s", self.settings.path, self.internal_url)
            self.supports_tools = bool(self._template_caps().get("supports_tools"))

    def _template_caps(self) -> dict[str, Any]:
        """What the model's chat template can do, from the engine's ``/props``."""
        import httpx

        try:
            response = httpx.get(
                f"{self.internal_url}/props",
                headers={"authorization": f"Bearer {self._internal_key}"},
                timeout=10,
                trust_env=False,
            )
            caps = response.json().get("chat_template_caps", {})
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("cannot read the chat template's capabilities: %s", exc)
            return {}
        return caps if isinstance(caps, dict) else {}

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    def close(self) -> None:
        """Stop every stream, wait for in-flight calls, then free the model."""
        for event in list(self._active):
            event.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        server, self._server = self._server, None
        del server

    async def unload(self) -> bool:
        """Free the model if no call is running (it loads again on the next start)."""
        if self._server is None or self.in_flight:
            return False
        server, self._server = self._server, None
        self.internal_url = None

        def free() -> None:
            nonlocal server
            server = None  # the last reference: ~Server stops the engine's loop

        await asyncio.get_running_loop().run_in_executor(self._executor, free)
        return True

    @contextlib.contextmanager
    def _use(self) -> Iterator[Any]:
        server = self._require_server()
        self.in_flight += 1
        self.last_used = time.monotonic()
        try:
            yield server
        finally:
            self.in_flight -= 1
            self.last_used = time.monotonic()

    def metrics_text(self) -> str | None:
        """llama.cpp's own metrics (Prometheus text), None while no model is loaded (blocking:
        a moment, between two decoding steps)."""
        server = self._server
        if server is None:
            return None
        text: str = server.handle_metrics()
        return text

    def _require_server(self) -> Any:
        if self._server is None:
            raise ModelNotReadyError(f"the model {self.settings.path.name} is not loaded yet")
        return self._server

    # ``n`` choices are ``n`` engine requests of one choice each (choices.py says why).

    async def complete_chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed chat completion: the engine's response object."""
        return await self._complete_choices("handle_chat_completions", payload)

    async def complete_text(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed legacy text completion."""
        return await self._complete_choices("handle_completions", payload)

    def stream_chat(self, payload: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Stream chat completion chunks as the engine generates them."""
        return self._stream_choices("handle_chat_completions", payload)

    def stream_text(self, payload: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Stream legacy text completion chunks."""
        return self._stream_choices("handle_completions", payload)

    async def _complete_choices(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        payloads = one_choice_payloads(payload)
        results = await asyncio.gather(*(self._complete(method, p) for p in payloads))
        return merge_results(list(results))

    def _stream_choices(
        self, method: str, payload: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        return merge_streams(one_choice_payloads(payload), lambda p: self._stream(method, p))

    async def embed(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Embeddings of the payload's ``input`` (OpenAI's response object)."""
        if not self.settings.embeddings:
            raise InvalidRequestError(
                f"Embeddings are disabled for {self.settings.path.name}.", code="unsupported"
            )
        body = orjson.dumps(payload).decode()
        with self._use() as server:
            try:
                raw = await asyncio.get_running_loop().run_in_executor(
                    self._executor, server.handle_embeddings, body
                )
            except Exception as exc:
                raise refused_request(exc, produced=False) from exc
        data: dict[str, Any] = orjson.loads(raw)
        if "error" in data:
            raise engine_error(data["error"], self.request_limit)
        return data

    async def _complete(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self.gate.shared():
                return await self._complete_once(method, payload)
        except ContextFullError:
            logger.info("the shared context filled up: running a request again alone")
            async with self.gate.alone():
                try:
                    return await self._complete_once(method, payload)
                except ContextFullError:
                    raise self._too_large_alone() from None

    async def _complete_once(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = orjson.dumps({**payload, "stream": False})
        result: list[bytes] = []
        with self._use() as server:

            def call() -> None:
                getattr(server, method)(body, result.append)

            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, call)
            except Exception as exc:
                raise refused_request(exc, produced=bool(result)) from exc
        if not result:
            raise ServerError("the engine returned no response")
        data: dict[str, Any] = orjson.loads(result[-1])
        if "error" in data:
            raise engine_error(data["error"], self.request_limit)
        return data

    async def _stream(
        self, method: str, payload: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Chunks as the engine generates them, run again alone when the shared context filled
        up before the first chunk (context_gate.py); closing the iterator (client gone,
        error) makes the engine stop at its next token."""
        held: list[dict[str, Any]] = []  # chunks before the first output (a role chunk)
        produced = False
        try:
            async with self.gate.shared():
                async for data in self._stream_once(method, payload):
                    if not produced and not _has_output(data):
                        held.append(data)
                        continue
                    produced = True
                    for early in held:
                        yield early
                    held.clear()
                    yield data
            for early in held:
                yield early
            return
        except ContextFullError:
            if produced:
                raise
            logger.info("the shared context filled up: running a stream again alone")
        async with self.gate.alone():
            try:
                async for data in self._stream_once(method, payload):
                    yield data
            except ContextFullError:
                raise self._too_large_alone() from None

    def _too_large_alone(self) -> ContextLengthExceededError:
        """A request that fills the context even alone (several prompts at once, or a
        max_tokens past what is left): the request's own size is the problem."""
        return ContextLengthExceededError(
            f"The request's prompts and answers together need more than the "
            f"{self.settings.context} tokens of context of this local model, even with no other "
            "request running; ask for fewer tokens (max_tokens) or send fewer prompts at once.",
            param="max_tokens",
        )

    async def _stream_once(
        self, method: str, payload: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        server = self._require_server()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        produced = threading.Event()  # the engine delivered something: past reading the request
        body = orjson.dumps({**payload, "stream": True})

        def on_chunk(raw: bytes) -> bool:
            produced.set()
            if stop.is_set():
                return True
            try:
                loop.call_soon_threadsafe(queue.put_nowait, raw)
            except RuntimeError:  # the event loop is gone
                return True
            return False

        def call() -> None:
            getattr(server, method)(body, on_chunk)

        self._active.add(stop)
        self.in_flight += 1  # until the engine thread is done, not just this consumer
        self.last_used = time.monotonic()
        future = loop.run_in_executor(self._executor, call)

        def done(_: object) -> None:
            self.in_flight -= 1
            self.last_used = time.monotonic()
            queue.put_nowait(_END)

        future.add_done_callback(done)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    if future.cancelled():
                        raise ModelNotReadyError("the engine is shutting down")
                    exc = future.exception()
                    if exc is not None:
                        raise refused_request(exc, produced.is_set()) from exc
                    return
                data: dict[str, Any] | None = orjson.loads(item)
                if data is None:  # the engine's first event for a prompt list: nothing in it
                    continue
                if "error" in data:
                    raise engine_error(data["error"], self.request_limit)
                yield data
        finally:
            stop.set()
            self._active.discard(stop)
