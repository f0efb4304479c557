"""The ``gemini`` provider: Google's Gemini API (``generativelanguage.googleapis.com``).

OpenAI chat requests are translated into ``GenerateContentRequest`` bodies and the answers back
into ``chat.completion`` objects and chunks. The API key travels in the ``x-goog-api-key`` header,
never in the URL, so it never appears in a logged URL.

Translation choices worth knowing:

* system and developer messages, wherever they are, become one ``systemInstruction``;
* tool results are ``functionResponse`` parts of a ``user`` turn, named after the earlier tool
  call they answer; consecutive turns of one role are merged, as Gemini wants them alternating;
* JSON schemas (tool parameters, ``response_format``) go as ``parametersJsonSchema`` and
  ``responseJsonSchema``, which take JSON Schema as OpenAI clients write it;
* a prompt refused outright (``promptFeedback.blockReason``, no candidates) is an
  :class:`~interference.errors.InvalidRequestError` with code ``content_filter``, not retryable;
* ``logprobs``, ``logit_bias`` and the engine-only sampling extensions are not forwarded.
"""

from __future__ import annotations

import mimetypes
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any, ClassVar
from urllib.parse import quote

import orjson

from interference.config import RemoteProviderConfig
from interference.errors import InterferenceError, InvalidRequestError, UpstreamError
from interference.providers.http import JSON, HTTPProvider, json_object
from interference.providers.tool_use import ToolUse, tool_use
from interference.upstream.client import UpstreamClient
from interference.upstream.errors import error_from_status
from interference.upstream.sse import sse_data
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
    FunctionMessage,
    ResponseMessage,
    ResponseToolCall,
    SystemMessage,
    ToolCallDelta,
    ToolCallFunctionDelta,
    ToolMessage,
    UserMessage,
)
from interference.wire.common import PromptTokensDetails, Usage
from interference.wire.tools import FunctionDefinition, JsonObjectFormat, JsonSchemaFormat

_FILTERED = ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY")
#: Gemini ``finishReason`` -> OpenAI ``finish_reason``; any other reason (OTHER, LANGUAGE,
#: MALFORMED_FUNCTION_CALL...) ends the choice as ``stop``.
_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(_FILTERED, "content_filter"),
}
_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_INT32 = 2**31


# --- request translation --------------------------------------------------------------------


def _invalid(message: str, param: str = "messages") -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _text_of(content: str | list[Any] | None) -> str:
    """The text of a string or of a list of text (and refusal) parts."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.text for part in content if getattr(part, "type", "") == "text")


def _media(url: str, default_mime: str) -> dict[str, Any]:
    """An ``inlineData`` part for a ``data:`` URL, else a ``fileData`` part for the URI."""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        mime = header.removeprefix("data:").split(";")[0] or default_mime
        return {"inlineData": {"mimeType": mime, "data": data}}
    mime = mimetypes.guess_type(url)[0] or default_mime
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _user_parts(content: str | list[Any]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for part in content:
        if part.type == "text":
            parts.append({"text": part.text})
        elif part.type == "image_url":
            parts.append(_media(part.image_url.url, "image/jpeg"))
        elif part.type == "input_audio":
            mime = f"audio/{part.input_audio.format}"
            parts.append({"inlineData": {"mimeType": mime, "data": part.input_audio.data}})
        elif part.file.file_data:
            data = part.file.file_data
            if not data.startswith("data:"):
                guessed = mimetypes.guess_type(part.file.filename or "")[0]
                data = f"data:{guessed or 'application/pdf'};base64,{data}"
            parts.append(_media(data, "application/pdf"))
        else:
            raise _invalid("the gemini provider cannot resolve `file_id` references")
    return parts


def _arguments(raw: str) -> dict[str, Any]:
    try:
        args = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise _invalid(f"tool call arguments are not valid JSON: {raw[:80]!r}") from None
    if not isinstance(args, dict):
        raise _invalid("tool call arguments must be a JSON object")
    return args


def _function_response(name: str, content: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"content": content}
    return {"functionResponse": {"name": name, "response": response}}


def _contents(request: ChatCompletionRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``systemInstruction`` parts and the alternating ``contents`` turns."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["parts"].extend(parts)
        elif parts:
            turns.append({"role": role, "parts": parts})

    for message in request.messages:
        if isinstance(message, SystemMessage | DeveloperMessage):
            system.append({"text": _text_of(message.content)})
        elif isinstance(message, UserMessage):
            add("user", _user_parts(message.content))
        elif isinstance(message, AssistantMessage):
            parts: list[dict[str, Any]] = []
            if text := _text_of(message.content):
                parts.append({"text": text})
            calls = list(message.tool_calls or ())
            for call in calls:
                call_names[call.id] = call.function.name
            functions = [call.function for call in calls]
            if message.function_call is not None:
                functions.append(message.function_call)
            for function in functions:
                args = _arguments(function.arguments)
                parts.append({"functionCall": {"name": function.name, "args": args}})
            add("model", parts)
        elif isinstance(message, ToolMessage):
            if message.tool_call_id not in call_names:
                raise _invalid(f"no earlier tool call has the id {message.tool_call_id!r}")
            name = call_names[message.tool_call_id]
            add("user", [_function_response(name, _text_of(message.content))])
        elif isinstance(message, FunctionMessage):
            add("user", [_function_response(message.name, message.content or "")])
    return system, turns


def _generation_config(request: ChatCompletionRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    stop = [request.stop] if isinstance(request.stop, str) else request.stop or None
    seed = request.seed
    if seed is not None and not -_INT32 <= seed < _INT32:
        seed %= _INT32  # Gemini's seed is an int32
    values = {
        "temperature": request.temperature,
        "topP": request.top_p,
        "topK": request.top_k or None,  # 0 is the engines' "disabled"
        "maxOutputTokens": request.token_limit,
        "stopSequences": stop,
        "candidateCount": request.n,
        "seed": seed,
        "presencePenalty": request.presence_penalty,
        "frequencyPenalty": request.frequency_penalty,
    }
    config.update((key, value) for key, value in values.items() if value is not None)
    fmt = request.response_format
    if isinstance(fmt, JsonObjectFormat | JsonSchemaFormat):
        config["responseMimeType"] = "application/json"
        schema = fmt.json_schema.schema_ if isinstance(fmt, JsonSchemaFormat) else fmt.schema_
        if schema is not None:
            config["responseJsonSchema"] = schema
    return config


def _declaration(function: FunctionDefinition) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": function.name}
    if function.description:
        declaration["description"] = function.description
    if function.parameters is not None:
        declaration["parametersJsonSchema"] = function.parameters
    return declaration


def _tool_config(tools: ToolUse) -> dict[str, Any]:
    config: dict[str, Any] = {"mode": _TOOL_MODES[tools.mode]}
    if tools.named is not None:
        config["allowedFunctionNames"] = [tools.named]
    return {"functionCallingConfig": config}


def gemini_body(request: ChatCompletionRequest) -> dict[str, Any]:
    """The ``GenerateContentRequest`` body for an OpenAI chat request."""
    system, contents = _contents(request)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if config := _generation_config(request):
        body["generationConfig"] = config
    tools = tool_use(request, "the Gemini API")
    if tools is not None:
        body["tools"] = [{"functionDeclarations": [_declaration(f) for f in tools.functions]}]
        if request.tool_choice is not None:
            body["toolConfig"] = _tool_config(tools)
    return body


# --- response translation -------------------------------------------------------------------


def _usage(meta: dict[str, Any]) -> Usage:
    prompt = int(meta.get("promptTokenCount", 0))
    completion = int(meta.get("candidatesTokenCount", 0)) + int(meta.get("thoughtsTokenCount", 0))
    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(meta.get("totalTokenCount", prompt + completion)),
    )
    if "cachedContentTokenCount" in meta:
        cached = int(meta["cachedContentTokenCount"])
        usage.prompt_tokens_details = PromptTokensDetails(cached_tokens=cached)
    return usage


def _parts(candidate: dict[str, Any]) -> tuple[str, list[ResponseToolCall]]:
    """A candidate's answer text (thoughts left out) and its function calls."""
    texts: list[str] = []
    calls: list[ResponseToolCall] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if "text" in part and not part.get("thought"):
            texts.append(str(part["text"]))
        elif "functionCall" in part:
            call = part["functionCall"]
            arguments = orjson.dumps(call.get("args") or {}).decode()
            calls.append(
                ResponseToolCall(
                    id=call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                    function=FunctionCall(name=call["name"], arguments=arguments),
                )
            )
    return "".join(texts), calls


def _index(candidate: dict[str, Any]) -> int:
    return int(candidate.get("index", 0))  # proto3 JSON leaves a zero index out


def _finish(reason: str, has_calls: bool) -> FinishReason:
    mapped = _FINISH.get(reason, "stop")
    return "tool_calls" if has_calls and mapped == "stop" else mapped


def _choice(candidate: dict[str, Any]) -> Choice:
    text, calls = _parts(candidate)
    message = ResponseMessage(content=text if text or not calls else None, refusal=None)
    if calls:
        message.tool_calls = calls
    reason = _finish(candidate.get("finishReason", "STOP"), bool(calls))
    return Choice(index=_index(candidate), message=message, finish_reason=reason, logprobs=None)


def _check_blocked(provider: str, event: dict[str, Any]) -> None:
    reason = (event.get("promptFeedback") or {}).get("blockReason")
    if reason and not event.get("candidates"):
        message = f"{provider}: the prompt was blocked by the upstream ({reason})"
        raise InvalidRequestError(message, param="messages", code="content_filter")


def _event_error(provider: str, data: bytes, event: dict[str, Any]) -> InterferenceError:
    """The exception for an ``{"error": ...}`` object sent inside a 200 answer."""
    error = event["error"]
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and code >= 400:
        return error_from_status(provider, code, data)
    return UpstreamError(f"{provider}: the upstream sent an error: {str(error)[:200]}")


class GeminiProvider(HTTPProvider):
    kind: ClassVar[str] = "gemini"
    #: ``n`` is sent as ``candidateCount``

    def __init__(
        self, name: str, config: RemoteProviderConfig, *, client: UpstreamClient | None = None
    ) -> None:
        super().__init__(name, config, client=client)
        # a base URL that already names the API version is used as it is
        self._prefix = "" if config.base_url.endswith(("/v1beta", "/v1")) else "/v1beta"

    def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.config.api_key} if self.config.api_key else {}

    def _path(self, model: str, method: str) -> str:
        return f"{self._prefix}/models/{quote(model.removeprefix('models/'), safe='')}:{method}"

    async def chat(self, request: ChatCompletionRequest, model: str) -> ChatCompletion:
        body = orjson.dumps(gemini_body(request))
        path = self._path(model, "generateContent")
        return await self.post_json(path, body, lambda data: self._completion(data, model))

    def _completion(self, data: dict[str, Any], model: str) -> ChatCompletion:
        if "error" in data:
            raise _event_error(self.name, orjson.dumps(data), data)
        _check_blocked(self.name, data)
        candidates = sorted(data.get("candidates") or (), key=_index)
        if not candidates:
            raise UpstreamError(f"{self.name}: the upstream answered without candidates")
        completion = ChatCompletion(
            id=_completion_id(data),
            created=int(time.time()),
            model=str(data.get("modelVersion") or model),
            choices=[_choice(candidate) for candidate in candidates],
        )
        if "usageMetadata" in data:
            completion.usage = _usage(data["usageMetadata"])
        return completion

    async def stream_chat(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Translate the SSE events of one answer, checking that every choice finished."""
        body = orjson.dumps(gemini_body(request))
        path = self._path(model, "streamGenerateContent")
        head: dict[str, Any] = {}
        started: set[int] = set()
        finished: set[int] = set()
        calls_so_far: dict[int, int] = {}
        usage: Usage | None = None

        def chunk(choices: list[ChunkChoice]) -> ChatCompletionChunk:
            return ChatCompletionChunk(choices=choices, **head)

        async with self.open_stream(path, body, headers=JSON, params={"alt": "sse"}) as response:
            async for data in sse_data(response):
                event = json_object(data)
                if "error" in event:
                    raise _event_error(self.name, data, event)
                _check_blocked(self.name, event)
                head = head or {
                    "id": _completion_id(event),
                    "created": int(time.time()),
                    "model": str(event.get("modelVersion") or model),
                }
                if isinstance(event.get("usageMetadata"), dict):
                    usage = _usage(event["usageMetadata"])
                for candidate in event.get("candidates") or ():
                    i = _index(candidate)
                    if i not in started:
                        started.add(i)
                        role = Delta(role="assistant", content="")
                        yield chunk([ChunkChoice(index=i, delta=role)])
                    text, calls = _parts(candidate)
                    if text:
                        yield chunk([ChunkChoice(index=i, delta=Delta(content=text))])
                    if calls:
                        first = calls_so_far.get(i, 0)
                        calls_so_far[i] = first + len(calls)
                        deltas = [_call_delta(first + k, c) for k, c in enumerate(calls)]
                        yield chunk([ChunkChoice(index=i, delta=Delta(tool_calls=deltas))])
                    if reason := candidate.get("finishReason"):
                        finished.add(i)
                        final = _finish(reason, i in calls_so_far)
                        yield chunk([ChunkChoice(index=i, delta=Delta(), finish_reason=final)])
        if not started:
            raise UpstreamError(f"{self.name}: the upstream stream had no candidates")
        if started - finished:
            raise UpstreamError(f"{self.name}: the upstream stream ended before its finish")
        if usage is not None:
            yield ChatCompletionChunk(choices=[], usage=usage, **head)


def _completion_id(response: dict[str, Any]) -> str:
    return f"chatcmpl-{response.get('responseId') or uuid.uuid4().hex}"


def _call_delta(index: int, call: ResponseToolCall) -> ToolCallDelta:
    function = ToolCallFunctionDelta(name=call.function.name, arguments=call.function.arguments)
    return ToolCallDelta(index=index, id=call.id, type="function", function=function)
