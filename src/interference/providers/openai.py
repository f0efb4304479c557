"""The ``openai`` provider: any OpenAI-compatible base URL.

OpenAI, Groq, OpenRouter, DeepSeek, Mistral, Together, Fireworks, vLLM, llama.cpp's
llama-server, Ollama's ``/v1``, LM Studio or another interference. The request goes upstream as
the client sent it (unknown fields included) with the deployment's model id. Answers are passed
on as the upstream wrote them (checked for the spec's shape; ``id``, ``created`` and ``model``
rewritten: :mod:`interference.wire.chunks`), streamed events as they arrive. With ``responses:
true`` it also takes ``/v1/responses`` as written (:mod:`.responses_passthrough`). Images, audio
and moderations go as written too, for the models a configuration deploys here
(:mod:`.media_relay`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import ClassVar, TypeVar

import orjson
from pydantic import BaseModel

from interference.errors import UpstreamError
from interference.providers.http import JSON, HTTPProvider, json_object
from interference.providers.media_relay import relay_media
from interference.providers.responses_passthrough import (
    PassedResponse,
    PassedResponseEvent,
    passed_response_events,
)
from interference.upstream.errors import check_status, error_from_exception, upstream_errors
from interference.upstream.sse import sse_batches
from interference.wire.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from interference.wire.chunks import Kind, RawChunk, RawReply
from interference.wire.completions import Completion, CompletionRequest
from interference.wire.embeddings import EmbeddingList, EmbeddingRequest
from interference.wire.media import BinaryBlock, MediaCall

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Forwarded = ChatCompletionRequest | CompletionRequest | EmbeddingRequest


class OpenAIProvider(HTTPProvider):
    kind: ClassVar[str] = "openai"
    endpoints = frozenset(
        {
            "chat",
            "text",
            "embeddings",
            "speech",
            "transcriptions",
            "translations",
            "images",
            "image_edits",
            "moderations",
        }
    )

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    def _body(self, request: Forwarded, model: str, stream: bool | None) -> bytes:
        body = request.upstream_fields()
        body["model"] = model
        if stream is None:  # embeddings: no stream field at all
            return orjson.dumps(body)
        body["stream"] = stream
        if stream:
            body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
        else:
            body.pop("stream_options", None)
        return orjson.dumps(body)

    async def _batches(
        self, path: str, body: bytes, kind: Kind
    ) -> AsyncGenerator[list[RawChunk], None]:
        """The upstream's SSE stream, each arrival's events as one batch, until ``[DONE]``."""
        async with (
            self.open_stream(path, body, headers=JSON) as response,
            aclosing(sse_batches(response)) as arrivals,
        ):
            async for events in arrivals:
                batch, done = self._decode(events, kind)
                if batch:
                    yield batch
                if done:
                    await response.drain()  # keeps the connection for the next request
                    return
        raise UpstreamError(f"{self.name}: the upstream stream ended without [DONE]")

    def _decode(self, events: list[bytes], kind: Kind) -> tuple[list[RawChunk], bool]:
        """The chunks of ``events`` and whether ``[DONE]`` came; an error event or a malformed
        one raises (a batch is all or nothing: what came with the bad event is not sent)."""
        batch: list[RawChunk] = []
        for data in events:
            if data == b"[DONE]":
                return batch, True
            event = json_object(data)
            if "error" in event:
                raise UpstreamError(f"{self.name}: {event['error']}")
            batch.append(RawChunk(event, kind))
        return batch, False

    # --- the routes' fast path: the upstream's JSON with only id, created and model rewritten

    def chat_batches(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[list[RawChunk], None]:
        body = self._body(request, model, stream=True)
        return self._batches("/chat/completions", body, "chat")

    async def chat_reply(self, request: ChatCompletionRequest, model: str) -> RawReply:
        body = self._body(request, model, stream=False)
        return await self.post_json("/chat/completions", body, RawReply.chat)

    def text_batches(
        self, request: CompletionRequest, model: str
    ) -> AsyncGenerator[list[RawChunk], None]:
        body = self._body(request, model, stream=True)
        return self._batches("/completions", body, "text")

    async def text_reply(self, request: CompletionRequest, model: str) -> RawReply:
        body = self._body(request, model, stream=False)
        return await self.post_json("/completions", body, RawReply.text)

    # --- the provider interface: pydantic models

    def stream_chat(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        return self._models(self.chat_batches(request, model), ChatCompletionChunk)

    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletion:
        body = self._body(request, model, stream=False)
        return await self.post_json("/chat/completions", body, ChatCompletion.model_validate)

    def stream_text(
        self, request: CompletionRequest, model: str
    ) -> AsyncGenerator[Completion, None]:
        return self._models(self.text_batches(request, model), Completion)

    async def complete_text(self, request: CompletionRequest, model: str) -> Completion:
        body = self._body(request, model, stream=False)
        return await self.post_json("/completions", body, Completion.model_validate)

    async def _models(
        self, batches: AsyncGenerator[list[RawChunk], None], model_type: type[M]
    ) -> AsyncGenerator[M, None]:
        try:
            async for batch in batches:
                for chunk in batch:
                    try:
                        parsed = model_type.model_validate(chunk.data)
                    except ValueError as exc:
                        raise error_from_exception(self.name, exc) from exc
                    yield parsed
        finally:
            await batches.aclose()

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingList:
        body = self._body(request, model, stream=None)
        return await self.post_json("/embeddings", body, EmbeddingList.model_validate)

    def media_blocks(self, call: MediaCall, model: str) -> AsyncGenerator[list[BinaryBlock], None]:
        """Images, audio and moderations as the client wrote them (media_relay.py)."""
        return relay_media(self, call, model)

    # --- /v1/responses as the client wrote it, when configured (responses_passthrough.py)

    @property
    def passes_responses(self) -> bool:
        return self.config.responses

    async def pass_response(self, body: bytes) -> PassedResponse:
        """POST a Responses body (``stream`` false) as it is; the answer as it came."""
        with upstream_errors(self.name):
            response = await self.client.post("/responses", content=body, headers=JSON)
            await check_status(self.name, response)
            return PassedResponse(response.content, self.name)

    async def pass_response_events(
        self, body: bytes
    ) -> AsyncGenerator[list[PassedResponseEvent], None]:
        """POST a streamed Responses body as it is; its events as they came."""
        async with (
            self.open_stream("/responses", body) as response,
            aclosing(sse_batches(response)) as arrivals,
        ):
            async for events in passed_response_events(arrivals, self.name):
                yield events
