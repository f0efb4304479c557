"""The ``anthropic`` provider: Anthropic's Messages API behind the OpenAI chat API.

Requests are translated to ``POST {base_url}/v1/messages`` (``/messages`` when ``base_url``
already ends in ``/v1``) and answers back to ``chat.completion`` objects and chunks:

* ``system``/``developer`` messages become the top-level ``system`` prompt (joined by blank
  lines); consecutive turns of one role are merged, since Anthropic wants them alternating;
  ``tool_calls`` become ``tool_use`` blocks and ``tool`` messages ``tool_result`` blocks in a
  user turn. Empty text is dropped (Anthropic refuses empty text blocks).
* images: ``data:`` URLs (JPEG, PNG, GIF, WebP, base64) become base64 image sources and
  ``http(s)`` URLs URL sources; audio and file parts, other images and the legacy ``function``
  role are refused with :class:`~interference.errors.InvalidRequestError`.
* ``max_tokens`` is required upstream: the client's bound, else :data:`DEFAULT_MAX_TOKENS`;
  ``temperature`` is clamped to Anthropic's 0..1; ``n > 1`` is refused (one choice per call).
* Fields Anthropic has no equivalent for are not sent: penalties, ``logit_bias``, ``seed``,
  ``logprobs``, ``response_format`` and the engine sampling extensions other than ``top_k``.
* usage: Anthropic's ``input_tokens`` excludes cache reads and writes; OpenAI's
  ``prompt_tokens`` includes cached tokens, so ``prompt_tokens`` is the sum of all three and
  ``cache_read_input_tokens`` is ``prompt_tokens_details.cached_tokens``.
* ``thinking`` blocks and server-tool blocks in answers are dropped.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any, ClassVar

import orjson

from interference.config import RemoteProviderConfig
from interference.errors import (
    InterferenceError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    RequestTooLargeError,
    UpstreamError,
    UpstreamOverloadedError,
    UpstreamTimeoutError,
)
from interference.providers.anthropic_passthrough import (
    PassedMessage,
    PassedMessageEvent,
    passed_events,
)
from interference.providers.http import JSON, SSE, HTTPProvider, json_object
from interference.providers.tool_use import ToolUse, tool_use
from interference.upstream.client import UpstreamClient
from interference.upstream.errors import check_status, upstream_errors
from interference.upstream.sse import sse_batches, sse_data
from interference.wire.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    DeveloperMessage,
    FinishReason,
    FunctionCall,
    ImagePart,
    ResponseMessage,
    ResponseToolCall,
    SystemMessage,
    TextPart,
    ToolCallDelta,
    ToolCallFunctionDelta,
    ToolMessage,
    UserMessage,
)
from interference.wire.common import PromptTokensDetails, Usage

ANTHROPIC_VERSION = "2023-06-01"
#: ``max_tokens`` sent when the client sets no bound (Anthropic requires one)
DEFAULT_MAX_TOKENS = 4096

_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_ERROR_EVENTS: dict[str, type[InterferenceError]] = {
    "invalid_request_error": InvalidRequestError,
    "rate_limit_error": RateLimitError,
    "not_found_error": NotFoundError,
    "request_too_large": RequestTooLargeError,
    "timeout_error": UpstreamTimeoutError,
    "overloaded_error": UpstreamOverloadedError,
}

Block = dict[str, Any]


def _invalid(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"anthropic: {message}", param=param)


def _joined(content: str | list[TextPart]) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)


def _image(part: ImagePart, where: str) -> Block:
    url = part.image_url.url
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    header, comma, data = url.removeprefix("data:").partition(",")
    media_type, _, encoding = header.partition(";")
    if url.startswith("data:") and comma and encoding == "base64" and media_type in _IMAGE_TYPES:
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {"type": "image", "source": source}
    kinds = ", ".join(_IMAGE_TYPES)
    raise _invalid(f"images must be http(s) URLs or base64 data: URLs of {kinds}", where)


def _user_blocks(message: UserMessage, where: str) -> list[Block]:
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}] if message.content else []
    blocks: list[Block] = []
    for j, part in enumerate(message.content):
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image(part, f"{where}.content[{j}]"))
        else:
            raise _invalid(f"`{part.type}` content is not supported", f"{where}.content[{j}]")
    return blocks


def _assistant_blocks(message: AssistantMessage, where: str) -> list[Block]:
    if message.function_call is not None:
        raise _invalid("legacy `function_call` is not supported; use `tool_calls`", where)
    content = message.content
    if isinstance(content, str) or content is None:
        texts = [content or ""]
    else:
        texts = [part.text if isinstance(part, TextPart) else part.refusal for part in content]
    blocks: list[Block] = [{"type": "text", "text": text} for text in texts if text]
    for j, call in enumerate(message.tool_calls or ()):
        try:
            arguments = orjson.loads(call.function.arguments or "{}")
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise _invalid("tool call arguments must be a JSON object", f"{where}.tool_calls[{j}]")
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}
        )
    return blocks


def _messages(request: ChatCompletionRequest) -> tuple[str, list[Block]]:
    """The ``system`` prompt and the alternating user/assistant turns."""
    system: list[str] = []
    turns: list[Block] = []
    for i, message in enumerate(request.messages):
        where = f"messages[{i}]"
        if isinstance(message, SystemMessage | DeveloperMessage):
            system.append(_joined(message.content))
            continue
        if isinstance(message, UserMessage):
            role, blocks = "user", _user_blocks(message, where)
        elif isinstance(message, AssistantMessage):
            role, blocks = "assistant", _assistant_blocks(message, where)
        elif isinstance(message, ToolMessage):
            result: Block = {"type": "tool_result", "tool_use_id": message.tool_call_id}
            if text := _joined(message.content):
                result["content"] = text
            role, blocks = "user", [result]
        else:
            raise _invalid("legacy `function` messages are not supported; use `tools`", where)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise _invalid("at least one non-empty user or assistant message is needed", "messages")
    return "\n\n".join(text for text in system if text), turns


def _tools(tools: ToolUse) -> list[Block]:
    translated: list[Block] = []
    for function in tools.functions:
        schema = function.parameters or {"type": "object", "properties": {}}
        item: Block = {"name": function.name, "input_schema": schema}
        if function.description is not None:
            item["description"] = function.description
        translated.append(item)
    return translated


def _tool_choice(tools: ToolUse, explicit: bool, parallel: bool | None) -> Block | None:
    result: Block | None
    if tools.named is not None:
        result = {"type": "tool", "name": tools.named}
    elif not explicit:
        result = None
    elif tools.mode == "required":
        result = {"type": "any"}
    else:
        result = {"type": tools.mode}
    if parallel is False and (result is None or result["type"] != "none"):
        result = {**(result or {"type": "auto"}), "disable_parallel_tool_use": True}
    return result


def _body(request: ChatCompletionRequest, model: str, stream: bool) -> bytes:
    """The Messages API request for an OpenAI chat request."""
    if request.n is not None and request.n > 1:
        raise _invalid("Anthropic answers one choice per request; `n` must be 1", "n")
    system, messages = _messages(request)
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": request.token_limit or DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k:  # 0 means "off" for the engine; Anthropic wants >= 1
        body["top_k"] = request.top_k
    if request.stop:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    tools = tool_use(request, "Anthropic's Messages API")
    if tools is not None:
        body["tools"] = _tools(tools)
        explicit = request.tool_choice is not None
        choice = _tool_choice(tools, explicit, request.parallel_tool_calls)
        if choice is not None:
            body["tool_choice"] = choice
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def _finish(stop_reason: Any) -> FinishReason:
    return _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _usage(usage: dict[str, Any]) -> Usage:
    cached = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + written
    completion = int(usage.get("output_tokens") or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


def _completion(message: dict[str, Any], model: str) -> ChatCompletion:
    """The ``chat.completion`` for a Messages API ``message`` object."""
    texts: list[str] = []
    calls: list[ResponseToolCall] = []
    for block in message["content"]:
        if block["type"] == "text":
            texts.append(str(block["text"]))
        elif block["type"] == "tool_use":
            arguments = orjson.dumps(block["input"]).decode()
            function = FunctionCall(name=str(block["name"]), arguments=arguments)
            calls.append(ResponseToolCall(id=str(block["id"]), function=function))
    text = "".join(texts)
    reply = ResponseMessage(
        role="assistant", content=text if text or not calls else None, refusal=None
    )
    if calls:
        reply.tool_calls = calls
    choice = Choice(
        index=0, message=reply, finish_reason=_finish(message.get("stop_reason")), logprobs=None
    )
    return ChatCompletion(
        id=str(message["id"]),
        created=int(time.time()),
        model=str(message.get("model") or model),
        choices=[choice],
        usage=_usage(message["usage"]),
    )


def _error_event(provider: str, error: Any) -> InterferenceError:
    """The exception for an ``error`` event in the middle of a stream."""
    kind = str(error.get("type")) if isinstance(error, dict) else "api_error"
    detail = error.get("message") if isinstance(error, dict) else None
    message = f"{provider}: upstream error event {kind}: {detail or 'no detail'}"
    if kind in ("authentication_error", "permission_error", "billing_error"):
        return UpstreamError(message, code="upstream_auth_error")
    if kind == "not_found_error":
        return NotFoundError(message, code="model_not_found")
    return _ERROR_EVENTS.get(kind, UpstreamError)(message)


class _StreamTranslator:
    """Turns Messages API stream events into ``chat.completion.chunk`` objects."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.id = ""
        self.model = model
        self.created = int(time.time())
        self.tool_index: dict[int, int] = {}  # content block index -> OpenAI tool call index
        self.stop_reason: Any = None
        self.usage: dict[str, Any] = {}
        self.done = False

    def _chunk(self, delta: Delta, finish: FinishReason | None = None) -> ChatCompletionChunk:
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish)
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=[choice]
        )

    def _tool_delta(self, index: int, **fields: Any) -> ChatCompletionChunk:
        return self._chunk(Delta(tool_calls=[ToolCallDelta(index=index, **fields)]))

    def feed(self, event: dict[str, Any]) -> list[ChatCompletionChunk]:
        kind = event.get("type")
        if kind == "message_start":
            message = event["message"]
            self.id = str(message["id"])
            self.model = str(message.get("model") or self.model)
            self.usage.update(message.get("usage") or {})
            return [self._chunk(Delta(role="assistant", content=""))]
        if kind == "content_block_start":
            block = event["content_block"]
            if block["type"] == "text" and block.get("text"):
                return [self._chunk(Delta(content=str(block["text"])))]
            if block["type"] == "tool_use":
                index = self.tool_index[int(event["index"])] = len(self.tool_index)
                arguments = orjson.dumps(block["input"]).decode() if block.get("input") else ""
                function = ToolCallFunctionDelta(name=str(block["name"]), arguments=arguments)
                return [
                    self._tool_delta(index, id=str(block["id"]), type="function", function=function)
                ]
            return []
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta" and delta["text"]:
                return [self._chunk(Delta(content=str(delta["text"])))]
            # server tools (web search...) stream their input too: only client tools are sent
            tool = self.tool_index.get(int(event["index"]))
            if delta["type"] == "input_json_delta" and delta["partial_json"] and tool is not None:
                function = ToolCallFunctionDelta(arguments=str(delta["partial_json"]))
                return [self._tool_delta(tool, function=function)]
            return []
        if kind == "message_delta":
            self.stop_reason = event["delta"].get("stop_reason") or self.stop_reason
            counts = event.get("usage") or {}
            self.usage.update({key: value for key, value in counts.items() if value is not None})
            return []
        if kind == "message_stop":
            self.done = True
            usage = _usage(self.usage)
            last = ChatCompletionChunk(
                id=self.id, created=self.created, model=self.model, choices=[], usage=usage
            )
            return [self._chunk(Delta(), _finish(self.stop_reason)), last]
        if kind == "error":
            raise _error_event(self.provider, event.get("error"))
        return []  # ping, content_block_stop, and event types added later


class AnthropicProvider(HTTPProvider):
    """Anthropic's Messages API (or a compatible proxy) at ``config.base_url``."""

    kind: ClassVar[str] = "anthropic"

    def __init__(
        self, name: str, config: RemoteProviderConfig, *, client: UpstreamClient | None = None
    ) -> None:
        super().__init__(name, config, client=client)
        self._path = "/messages" if config.base_url.endswith("/v1") else "/v1/messages"

    def auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key
        return headers

    async def stream_chat(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        body = _body(request, model, stream=True)
        translator = _StreamTranslator(self.name, model)
        async with self.open_stream(self._path, body) as response:
            async for data in sse_data(response):
                for chunk in translator.feed(json_object(data)):
                    yield chunk
                if translator.done:
                    return
        raise UpstreamError(f"{self.name}: the upstream stream ended without message_stop")

    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletion:
        body = _body(request, model, stream=False)
        return await self.post_json(self._path, body, lambda data: _completion(data, model))

    # --- /v1/messages as the client wrote it (anthropic_passthrough.py)

    #: the Messages API is this provider's own dialect: the route passes requests through
    passes_messages: ClassVar[bool] = True

    async def pass_message(self, body: bytes, headers: dict[str, str]) -> PassedMessage:
        """POST a Messages body (``stream`` false) as it is; the answer as it came."""
        with upstream_errors(self.name):
            response = await self.client.post(self._path, content=body, headers={**JSON, **headers})
            await check_status(self.name, response)
            return PassedMessage(response.content, self.name)

    async def pass_events(
        self, body: bytes, headers: dict[str, str]
    ) -> AsyncGenerator[list[PassedMessageEvent], None]:
        """POST a streamed Messages body as it is; its events as they came."""
        with upstream_errors(self.name):
            async with self.client.stream(
                "POST", self._path, content=body, headers={**SSE, **headers}
            ) as response:
                await check_status(self.name, response)
                failure = lambda error: _error_event(self.name, error)  # noqa: E731
                async for events in passed_events(sse_batches(response), self.name, failure):
                    yield events
