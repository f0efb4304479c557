"""The provider abstraction: one async generator per provider, plus capability attributes.

A provider answers chat requests for the upstream model ids it serves. ``stream_chat`` is the
one method every provider implements: it yields ``chat.completion.chunk`` objects as they are
produced and raises an :class:`~interference.errors.InterferenceError` when it fails. ``chat``
defaults to collecting that stream; a provider with a cheaper non-streamed path overrides it.

The routes call the provider through four thin methods, ``chat_reply``, ``chat_batches``,
``text_reply`` and ``text_batches``, whose defaults wrap the methods above. A provider that can
pass an upstream's answer on without re-modelling it (``openai``) overrides them to return
:mod:`interference.wire.chunks` objects, and to yield every chunk that arrived together as one
batch, which the relay then writes at once.

Images, audio and moderations go through :meth:`Provider.media_blocks`: a provider that serves
one of those endpoints names it in ``endpoints`` and yields the answer's bytes as they come.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from interference.errors import InvalidRequestError, UpstreamError
from interference.upstream.client import PoolStats
from interference.wire.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    FunctionCall,
    ResponseMessage,
    ResponseToolCall,
)
from interference.wire.chunks import Batch, Reply
from interference.wire.common import Usage
from interference.wire.completions import Completion, CompletionRequest
from interference.wire.embeddings import EmbeddingList, EmbeddingRequest
from interference.wire.media import MediaCall

#: what a provider can answer: chat completions, legacy text completions, embeddings, and the
#: media endpoints (wire/media.py)
Endpoint = Literal[
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
ENDPOINT_NAMES: dict[Endpoint, str] = {
    "chat": "chat completions",
    "text": "text completions",
    "embeddings": "embeddings",
    "speech": "speech (/v1/audio/speech)",
    "transcriptions": "transcriptions (/v1/audio/transcriptions)",
    "translations": "translations (/v1/audio/translations)",
    "images": "image generation (/v1/images/generations)",
    "image_edits": "image edits (/v1/images/edits)",
    "moderations": "moderations (/v1/moderations)",
}


@dataclass(frozen=True)
class ServedModel:
    """A model id a provider answers for, as listed by ``GET /v1/models``."""

    id: str
    owned_by: str
    created: int


class Provider(ABC):
    """Base of every provider kind."""

    #: the ``kind`` name used in configuration files
    kind: ClassVar[str]
    #: what it answers; the router passes a request only to deployments that serve its endpoint
    endpoints: frozenset[Endpoint] = frozenset({"chat"})

    def __init__(self, name: str) -> None:
        self.name = name
        #: requests it takes at once (answering or waiting); past it the router answers 429
        self.capacity: int | None = None

    @property
    def ready(self) -> bool:
        return True

    @abstractmethod
    def models(self) -> list[ServedModel]:
        """The upstream model ids this provider serves."""

    async def start(self) -> None:
        """Acquire resources (load a model, open a connection pool)."""

    async def aclose(self) -> None:
        """Release what :meth:`start` acquired."""

    @abstractmethod
    def stream_chat(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Yield the completion's chunks; closing the iterator stops generation."""

    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletion:
        """The whole completion at once (by default, the collected stream)."""
        stream = self.stream_chat(request, model)
        try:
            return await collect_chunks(stream)
        finally:
            await stream.aclose()

    async def chat_reply(self, request: ChatCompletionRequest, model: str) -> Reply:
        """The completion as the routes send it (by default, :meth:`chat`)."""
        return await self.chat(request, model)

    def chat_batches(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[Batch, None]:
        """The stream as the routes relay it: chunks grouped by arrival (by default, each
        chunk of :meth:`stream_chat` alone)."""
        return one_per_batch(self.stream_chat(request, model))

    async def text_reply(self, request: CompletionRequest, model: str) -> Reply:
        return await self.complete_text(request, model)

    def text_batches(self, request: CompletionRequest, model: str) -> AsyncGenerator[Batch, None]:
        return one_per_batch(self.stream_text(request, model))

    def _unsupported(self, what: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"The provider `{self.name}` ({self.kind}) does not serve {what}.", code="unsupported"
        )

    async def complete_text(self, request: CompletionRequest, model: str) -> Completion:
        """A legacy text completion (``/v1/completions``)."""
        raise self._unsupported("text completions")

    def stream_text(
        self, request: CompletionRequest, model: str
    ) -> AsyncGenerator[Completion, None]:
        """A streamed legacy text completion."""
        raise self._unsupported("text completions")

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingList:
        """Embeddings (``/v1/embeddings``)."""
        raise self._unsupported("embeddings")

    def pool(self) -> PoolStats | None:
        """Its pool of upstream connections (None: it has none, the local engine)."""
        return None

    def media_blocks(self, call: MediaCall, model: str) -> AsyncGenerator[Batch, None]:
        """An image, audio or moderation answer's bytes as they are produced, the first
        block naming their media type (:class:`~interference.wire.media.BinaryBlock`)."""
        raise self._unsupported(ENDPOINT_NAMES[call.endpoint])

    def describe(self) -> dict[str, Any]:
        """Operator-facing state (for health and status pages)."""
        return {"name": self.name, "kind": self.kind, "ready": self.ready}


async def one_per_batch(
    chunks: AsyncGenerator[ChatCompletionChunk, None] | AsyncGenerator[Completion, None],
) -> AsyncGenerator[Batch, None]:
    """Each chunk as a batch of its own; closing this closes ``chunks``."""
    try:
        async for chunk in chunks:
            yield (chunk,)
    finally:
        await chunks.aclose()


async def collect_chunks(chunks: AsyncIterator[ChatCompletionChunk]) -> ChatCompletion:
    """Assemble a ``chat.completion`` from a stream of chunks (any ``n``, tool calls, usage)."""
    first: ChatCompletionChunk | None = None
    texts: dict[int, list[str]] = {}
    refusals: dict[int, list[str]] = {}
    thoughts: dict[int, list[str]] = {}
    finish: dict[int, Any] = {}
    logprobs: dict[int, list[Any]] = {}
    tools: dict[int, dict[int, dict[str, Any]]] = {}
    usage: Usage | None = None
    async for chunk in chunks:
        first = first or chunk
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            i = choice.index
            texts.setdefault(i, [])
            if choice.delta.content:
                texts[i].append(choice.delta.content)
            if choice.delta.refusal:
                refusals.setdefault(i, []).append(choice.delta.refusal)
            if choice.delta.reasoning_content:
                thoughts.setdefault(i, []).append(choice.delta.reasoning_content)
            for call in choice.delta.tool_calls or ():
                slot = tools.setdefault(i, {}).setdefault(
                    call.index, {"id": "", "name": "", "arguments": ""}
                )
                slot["id"] = call.id or slot["id"]
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
            if choice.logprobs and choice.logprobs.get("content"):
                logprobs.setdefault(i, []).extend(choice.logprobs["content"])
            if choice.finish_reason is not None:
                finish[i] = choice.finish_reason
    if first is None:
        raise UpstreamError("the provider returned an empty stream")
    choices = []
    for i in sorted(texts):
        calls = [
            ResponseToolCall(
                id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"])
            )
            for _, c in sorted(tools.get(i, {}).items())
        ]
        message = ResponseMessage(
            role="assistant",
            content="".join(texts[i]) if texts[i] or not calls else None,
            refusal="".join(refusals[i]) if i in refusals else None,
        )
        if calls:
            message.tool_calls = calls
        if i in thoughts:
            message.reasoning_content = "".join(thoughts[i])
        choices.append(
            Choice(
                index=i,
                message=message,
                finish_reason=finish.get(i, "stop"),
                logprobs={"content": logprobs[i], "refusal": None} if i in logprobs else None,
            )
        )
    result = ChatCompletion(id=first.id, created=first.created, model=first.model, choices=choices)
    if usage is not None:
        result.usage = usage
    return result
