"""The ``local`` provider: a GGUF model run in-process by the embedded engine."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, ClassVar

from interference.config import LocalModelConfig
from interference.engine import EngineSettings, LlamaEngine, ModelFile
from interference.errors import InvalidRequestError
from interference.providers import local_tools
from interference.providers.base import Endpoint, Provider, ServedModel
from interference.providers.tool_use import tool_use
from interference.wire.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Delta,
    Message,
    TextPart,
    UserMessage,
)
from interference.wire.completions import Completion, CompletionRequest
from interference.wire.embeddings import EmbeddingList, EmbeddingRequest

# Request fields that are ours to handle, never forwarded to the engine as they are.
_NOT_FORWARDED = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "user",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "provider",
}
_RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's "pick a random seed"
logger = logging.getLogger(__name__)


class LocalProvider(Provider):
    kind: ClassVar[str] = "local"

    def __init__(self, name: str, model_file: ModelFile, config: LocalModelConfig) -> None:
        super().__init__(name)
        self.model_id = config.id or model_file.id
        self.model_file = model_file
        self.sampling = model_file.sampling.merged(config.sampling)
        self.engine = LlamaEngine(
            EngineSettings(
                path=model_file.path,
                parallel=config.parallel,
                context=config.context,
                rope_scaling=config.rope_scaling,
                threads=config.threads,
                prompt_cache_mib=config.prompt_cache_mib,
                embeddings=config.embeddings,
                weights=config.weights,
                weights_cache=Path(config.weights_cache) if config.weights_cache else None,
            )
        )
        self._created = int(model_file.path.stat().st_mtime)
        self.config = config
        self._load_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self.capacity = config.parallel + config.max_queue
        # a request that sets no max_tokens gets at most its share of the shared context, so
        # that the slots' answers fit in it together
        self.default_max_tokens = (
            None
            if config.default_max_tokens is None
            else max(1, min(config.default_max_tokens, config.context // config.parallel))
        )
        served: set[Endpoint] = {"chat", "text"}
        if config.embeddings:
            served.add("embeddings")
        self.endpoints = frozenset(served)

    @property
    def ready(self) -> bool:
        """Able to answer: loaded, or loaded on demand by the first request."""
        return self.engine.ready or self.config.load == "first-use"

    def models(self) -> list[ServedModel]:
        return [ServedModel(self.model_id, self.model_file.owned_by, self._created)]

    async def start(self) -> None:
        if self.config.load == "start":
            await self.engine.start()
        if self.config.idle_unload_s is not None:
            self._watcher = asyncio.create_task(self._unload_when_idle(self.config.idle_unload_s))

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        self.engine.close()

    async def ensure_loaded(self) -> None:
        """Load the model now if it is not (first use, or after an idle unload)."""
        if not self.engine.ready:
            async with self._load_lock:
                if not self.engine.ready:
                    started = time.perf_counter()
                    await self.engine.start()
                    logger.info("loaded %s in %.1f s", self.model_id, time.perf_counter() - started)

    async def _unload_when_idle(self, idle: float) -> None:
        while True:
            await asyncio.sleep(min(idle / 4, 5.0))
            engine = self.engine
            if engine.ready and not engine.in_flight and time.monotonic() - engine.last_used > idle:
                async with self._load_lock:
                    if await engine.unload():
                        logger.info(
                            "unloaded %s after %.0f s without requests", self.model_id, idle
                        )

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        settings = self.engine.settings
        info.update(
            loaded=self.engine.ready,
            load=self.config.load,
            idle_unload_s=self.config.idle_unload_s,
            model=self.model_id,
            path=str(self.model_file.path),
            weights=self.config.weights,
            loaded_file=str(self.engine.loaded_path) if self.engine.loaded_path else None,
            parallel=settings.parallel,
            context=settings.context,  # shared by the slots
            rope_scaling=settings.rope_scaling,
        )
        return info

    def engine_payload(self, request: ChatCompletionRequest) -> dict[str, Any]:
        """The engine request: the client's fields, then the model's sampling defaults."""
        self._check_choices(request.n)
        messages = [self._engine_message(i, message) for i, message in enumerate(request.messages)]
        payload = {k: v for k, v in request.known_fields().items() if k not in _NOT_FORWARDED}
        payload["messages"] = messages
        limit = request.token_limit
        if limit is None:
            limit = self.default_max_tokens
        if limit is not None:
            # a bound by default: requests share the context, and a small model may loop
            payload["max_tokens"] = limit
        if payload.get("repeat_last_n") == -1:  # llama.cpp's documented "the whole context",
            payload["repeat_last_n"] = self.engine.settings.context  # which its check refuses
        self._complete_payload(payload, request.stop, request.seed)
        tools = tool_use(request, f"the local model `{self.model_id}`")
        for key in ("tools", "tool_choice", "parallel_tool_calls"):
            payload.pop(key, None)  # put back below in the form the engine takes
        if tools is None or tools.mode == "none":
            return payload
        if not self.engine.supports_tools:
            local_tools.apply(request, payload, tools)
            return payload
        # The engine takes tool_choice as a mode only (a named function would read as "auto"):
        # a named function is the only one declared, and required.
        payload["tools"] = [
            {"type": "function", "function": f.model_dump(exclude_none=True, by_alias=True)}
            for f in tools.callable
        ]
        payload["tool_choice"] = "required" if tools.named else tools.mode
        if request.parallel_tool_calls is not None:
            payload["parallel_tool_calls"] = request.parallel_tool_calls
        return payload

    def _engine_message(self, i: int, message: Message) -> dict[str, Any]:
        """A message as the chat template takes it: text parts only, ``developer`` as
        ``system``, an assistant's content parts (text, refusal) as one string."""
        if isinstance(message, UserMessage) and not isinstance(message.content, str):
            for j, part in enumerate(message.content):
                if part.type != "text":
                    raise InvalidRequestError(
                        f"The model `{self.model_id}` accepts text only; "
                        f"content parts of type `{part.type}` are not supported.",
                        param=f"messages[{i}].content[{j}].type",
                    )
        dumped = message.model_dump(exclude_none=True)
        if dumped["role"] == "developer":  # chat templates know `system`
            dumped["role"] = "system"
        if dumped["role"] != "assistant":  # the engine wants content (a function's may be null)
            dumped.setdefault("content", "")
        if isinstance(message, AssistantMessage) and isinstance(message.content, list):
            dumped["content"] = "".join(
                part.text if isinstance(part, TextPart) else part.refusal
                for part in message.content
            )
        return dumped

    def _check_choices(self, n: int | None) -> None:
        """``n`` choices are ``n`` engine requests run at once (engine/choices.py), a slot
        each: no more than the model has."""
        slots = self.engine.settings.parallel
        if n is not None and n > slots:
            raise InvalidRequestError(
                f"`n` can be at most {slots} for the local model `{self.model_id}` "
                f"(its parallel slots); got {n}.",
                param="n",
            )

    def emulates_tools(self, request: ChatCompletionRequest) -> bool:
        """Whether tools are answered by grammar here (the template has no tool format)."""
        return local_tools.wants_tools(request) and not self.engine.supports_tools

    async def stream_chat(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        await self.ensure_loaded()  # first: whether tools are native is known once loaded
        payload = self.engine_payload(request)
        chunks = self._chunks(payload)
        if self.emulates_tools(request):
            chunks = local_tools.translate_stream(chunks)
        async for chunk in chunks:
            yield chunk

    async def _chunks(self, payload: dict[str, Any]) -> AsyncGenerator[ChatCompletionChunk, None]:
        opened: set[int] = set()  # choices whose role chunk went out
        async for data in self.engine.stream_chat(payload):
            chunk = ChatCompletionChunk.model_validate(data)
            for choice in chunk.choices:
                delta = choice.delta
                if delta.role is not None and delta.content is None:
                    delta.content = ""  # OpenAI's first chunk: role and empty content
                elif delta.role is None and choice.index not in opened:
                    # with n > 1 the engine now and then skips a choice's role chunk
                    opening = ChunkChoice(
                        index=choice.index, delta=Delta(role="assistant", content="")
                    )
                    yield ChatCompletionChunk(
                        id=chunk.id, created=chunk.created, model=chunk.model, choices=[opening]
                    )
                opened.add(choice.index)
                _complete_logprobs(choice.logprobs)
            yield chunk

    def text_payload(self, request: CompletionRequest) -> dict[str, Any]:
        """The engine request of a legacy text completion, with the sampling defaults."""
        self._check_choices(request.n)
        for name in ("echo", "suffix"):
            if getattr(request, name):
                raise InvalidRequestError(
                    f"`{name}` is not supported by the local model `{self.model_id}`.",
                    param=name,
                    code="unsupported",
                )
        if request.best_of is not None and request.best_of > 1:
            raise InvalidRequestError(
                "`best_of` above 1 is not supported; use `n`.", param="best_of", code="unsupported"
            )
        payload = request.model_dump(
            exclude_none=True,
            include=set(type(request).model_fields) - {"model", "provider", "user", "best_of"},
        )
        if request.max_tokens is None and self.default_max_tokens is not None:
            payload["max_tokens"] = self.default_max_tokens
        self._complete_payload(payload, request.stop, request.seed)
        return payload

    def _complete_payload(
        self, payload: dict[str, Any], stop: str | list[str] | None, seed: int | None
    ) -> None:
        """What every engine request gets: stop as a list, the seed in llama.cpp's range,
        the model's sampling defaults for what the client left out, and usage."""
        if isinstance(stop, str):
            payload["stop"] = [stop]
        if seed is not None:
            folded = seed % 2**32
            payload["seed"] = folded if folded != _RANDOM_SEED else folded - 1
        for key, value in self.sampling.values().items():
            payload.setdefault(key, value)
        # Always ask for usage: the gateway accounts for tokens even when the client does not.
        payload["stream_options"] = {"include_usage": True}

    async def complete_text(self, request: CompletionRequest, model: str) -> Completion:
        payload = self.text_payload(request)
        await self.ensure_loaded()
        data = await self.engine.complete_text(payload)
        return Completion.model_validate(data)

    async def stream_text(
        self, request: CompletionRequest, model: str
    ) -> AsyncGenerator[Completion, None]:
        payload = self.text_payload(request)
        await self.ensure_loaded()
        async for data in self.engine.stream_text(payload):
            yield Completion.model_validate(data)

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingList:
        if request.dimensions is not None:
            raise InvalidRequestError(
                f"`dimensions` is not supported by the local model `{self.model_id}`.",
                param="dimensions",
                code="unsupported",
            )
        payload = request.model_dump(exclude_none=True, include={"input", "encoding_format"})
        await self.ensure_loaded()
        return EmbeddingList.model_validate(await self.engine.embed(payload))

    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletion:
        await self.ensure_loaded()
        data = await self.engine.complete_chat(self.engine_payload(request))
        completion = ChatCompletion.model_validate(data)
        for choice in completion.choices:
            _complete_logprobs(choice.logprobs)
            if choice.finish_reason is None:
                choice.finish_reason = "stop"
        if self.emulates_tools(request):
            local_tools.translate_completion(completion)
        return completion


def _complete_logprobs(logprobs: dict[str, Any] | None) -> None:
    """OpenAI's logprobs object always has ``refusal`` (null here); llama.cpp leaves it out."""
    if logprobs is not None:
        logprobs.setdefault("refusal", None)
