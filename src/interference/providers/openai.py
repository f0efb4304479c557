"""The ``openai`` provider: any OpenAI-compatible base URL.

OpenAI, Groq, OpenRouter, DeepSeek, Mistral, Together, Fireworks, vLLM, llama.cpp's
llama-server, Ollama's ``/v1``, LM Studio or another interference. The request goes upstream as
the client sent it (unknown fields included) with the deployment's model id; streamed chunks are
passed on one by one as they arrive.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any, ClassVar, TypeVar

import orjson

from interference.api.wire import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from interference.api.wire_more import (
    Completion,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
)
from interference.errors import InterferenceError, UpstreamError
from interference.providers.http import (
    HTTPProvider,
    check_status,
    error_from_exception,
    json_object,
    sse_data,
)

_JSON = {"content-type": "application/json", "accept": "application/json"}
T = TypeVar("T")
Forwarded = ChatCompletionRequest | CompletionRequest | EmbeddingRequest


class OpenAIProvider(HTTPProvider):
    kind: ClassVar[str] = "openai"

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

    async def _stream(
        self, path: str, body: bytes, parse: Callable[[dict[str, Any]], T]
    ) -> AsyncGenerator[T, None]:
        try:
            async with self.client.stream("POST", path, content=body, headers=_JSON) as response:
                await check_status(self.name, response)
                async for data in sse_data(response):
                    if data == b"[DONE]":
                        await response.drain()  # keeps the connection for the next request
                        return
                    event = json_object(data)
                    if "error" in event:
                        raise UpstreamError(f"{self.name}: {event['error']}")
                    yield parse(event)
            raise UpstreamError(f"{self.name}: the upstream stream ended without [DONE]")
        except InterferenceError:
            raise
        except Exception as exc:
            raise error_from_exception(self.name, exc) from exc

    async def _post(self, path: str, body: bytes, parse: Callable[[dict[str, Any]], T]) -> T:
        try:
            response = await self.client.post(path, content=body, headers=_JSON)
            await check_status(self.name, response)
            return parse(json_object(response.content))
        except InterferenceError:
            raise
        except Exception as exc:
            raise error_from_exception(self.name, exc) from exc

    def stream_chat(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        body = self._body(request, model, stream=True)
        return self._stream("/chat/completions", body, ChatCompletionChunk.model_validate)

    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletion:
        body = self._body(request, model, stream=False)
        return await self._post("/chat/completions", body, ChatCompletion.model_validate)

    def stream_text(
        self, request: CompletionRequest, model: str
    ) -> AsyncGenerator[Completion, None]:
        body = self._body(request, model, stream=True)
        return self._stream("/completions", body, Completion.model_validate)

    async def complete_text(self, request: CompletionRequest, model: str) -> Completion:
        body = self._body(request, model, stream=False)
        return await self._post("/completions", body, Completion.model_validate)

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingList:
        body = self._body(request, model, stream=None)
        return await self._post("/embeddings", body, EmbeddingList.model_validate)
