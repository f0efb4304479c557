"""Fake providers for unit tests: scripted chunks, scripted failures, observable cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, ClassVar

from interference.errors import InterferenceError
from interference.providers.base import Provider, ServedModel
from interference.wire.chat import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Delta,
    ToolCallDelta,
    ToolCallFunctionDelta,
)
from interference.wire.common import Usage
from interference.wire.completions import Completion, CompletionChoice, CompletionRequest
from interference.wire.embeddings import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage


class FakeProvider(Provider):
    """Streams ``words`` (one chunk each) for every choice; fails where told to."""

    kind: ClassVar[str] = "fake"

    def __init__(
        self,
        name: str = "fake",
        model_id: str = "fake-model",
        words: tuple[str, ...] = ("Hello", " world", "!"),
        fail_before: InterferenceError | None = None,
        fail_after: int | None = None,
        fail_with: InterferenceError | None = None,
        delay: float = 0.0,
    ) -> None:
        super().__init__(name)
        self.model_id = model_id
        self.words = words
        self.fail_before = fail_before
        self.fail_after = fail_after
        self.fail_with = fail_with
        self.delay = delay
        self.requests: list[ChatCompletionRequest] = []
        self.closed_early = asyncio.Event()
        self.started = False
        self.closed = False

    def models(self) -> list[ServedModel]:
        return [ServedModel(self.model_id, "tests", 1700000000)]

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.closed = True

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        chunk = ChatCompletionChunk(
            id="upstream-id", created=1, model=self.model_id, choices=choices
        )
        if usage is not None:
            chunk.usage = usage
        return chunk

    async def stream_chat(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        self.requests.append(request)
        if self.fail_before is not None:
            raise self.fail_before
        n = request.n or 1
        finished = False
        try:
            for i in range(n):
                yield self._chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
            for position, word in enumerate(self.words):
                if self.fail_after is not None and position == self.fail_after:
                    assert self.fail_with is not None
                    raise self.fail_with
                if self.delay:
                    await asyncio.sleep(self.delay)
                for i in range(n):
                    yield self._chunk([ChunkChoice(index=i, delta=Delta(content=word))])
            for i in range(n):
                yield self._chunk([ChunkChoice(index=i, delta=Delta(), finish_reason="stop")])
            tokens = len(self.words) * n
            yield self._chunk(
                [], Usage(prompt_tokens=7, completion_tokens=tokens, total_tokens=7 + tokens)
            )
            finished = True
        finally:
            if not finished:
                self.closed_early.set()


class ServingFake(FakeProvider):
    """The fake chat provider, also answering text completions (``n`` choices; a stream of
    ``words``) and embeddings (one per input), so that a request these routes accept is a 200."""

    endpoints = frozenset({"chat", "text", "embeddings"})

    def _completion(self, request: CompletionRequest, text: str, finish: Any) -> Completion:
        choices = [
            CompletionChoice(index=i, text=text, finish_reason=finish)
            for i in range(request.n or 1)
        ]
        return Completion(id="upstream", created=1, model=self.model_id, choices=choices)

    async def complete_text(self, request: CompletionRequest, model: str) -> Completion:
        return self._completion(request, "Hello world!", "stop")

    async def stream_text(
        self, request: CompletionRequest, model: str
    ) -> AsyncGenerator[Completion, None]:
        for word in self.words:
            yield self._completion(request, word, None)
        yield self._completion(request, "", "length")

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingList:
        given_input = request.input
        many = isinstance(given_input, list) and not all(isinstance(x, int) for x in given_input)
        count = len(given_input) if many else 1
        return EmbeddingList(
            model=self.model_id,
            data=[Embedding(index=i, embedding=[0.25, -0.5, 1.0]) for i in range(count)],
            usage=EmbeddingUsage(prompt_tokens=count, total_tokens=count),
        )


class ThinkingToolFake(FakeProvider):
    """Streams ``thoughts`` as ``reasoning_content`` first; then, when the request offers tools
    and its last message is the user's, calls the first tool with ``arguments`` (in two
    pieces) instead of answering ``words``, as a reasoning model with tools would."""

    def __init__(self, arguments: str = '{"city": "Paris"}', thoughts: tuple[str, ...] = ()):
        super().__init__()
        self.arguments = arguments
        self.thoughts = thoughts

    async def stream_chat(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        self.requests.append(request)
        yield self._chunk([ChunkChoice(index=0, delta=Delta(role="assistant", content=""))])
        for thought in self.thoughts:
            yield self._chunk([ChunkChoice(index=0, delta=Delta(reasoning_content=thought))])
        calling = bool(request.tools) and request.messages[-1].role == "user"
        if calling and request.tool_choice != "none":
            assert request.tools is not None
            name = request.tools[0].function.name
            half = len(self.arguments) // 2
            head = ToolCallDelta(
                index=0,
                id="call_fake_1",
                type="function",
                function=ToolCallFunctionDelta(name=name, arguments=self.arguments[:half]),
            )
            tail = ToolCallDelta(
                index=0, function=ToolCallFunctionDelta(arguments=self.arguments[half:])
            )
            for call in (head, tail):
                yield self._chunk([ChunkChoice(index=0, delta=Delta(tool_calls=[call]))])
            finish = "tool_calls"
        else:
            for word in self.words:
                yield self._chunk([ChunkChoice(index=0, delta=Delta(content=word))])
            finish = "stop"
        yield self._chunk([ChunkChoice(index=0, delta=Delta(), finish_reason=finish)])
        yield self._chunk([], Usage(prompt_tokens=11, completion_tokens=4, total_tokens=15))
