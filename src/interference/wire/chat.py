"""The OpenAI chat completions dialect: ``POST /v1/chat/completions``, its request, answer and
stream chunk, mirroring the spec (https://platform.openai.com/docs/api-reference/chat/create).

The request's fields are in reading order rather than the spec's (which comes out of its
``allOf`` composition and puts ``top_logprobs`` before ``logprobs``): the rules across fields are
checked on the later field, which sees the earlier ones validated, so ``logprobs`` comes before
``top_logprobs`` and ``tools`` before ``tool_choice``. The other dialects follow their spec's
order."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from interference.wire.common import REQUEST as _REQUEST
from interference.wire.common import AnswerMethods, StreamOptions, Usage, WireModel
from interference.wire.tools import ResponseFormat, Tool, ToolChoice, choice_problem

# --- request: message content parts ---------------------------------------------------------


class TextPart(BaseModel):
    model_config = _REQUEST
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    model_config = _REQUEST
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    model_config = _REQUEST
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(BaseModel):
    model_config = _REQUEST
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(BaseModel):
    model_config = _REQUEST
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(BaseModel):
    model_config = _REQUEST
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FilePart(BaseModel):
    model_config = _REQUEST
    type: Literal["file"]
    file: FileRef


class RefusalPart(BaseModel):
    model_config = _REQUEST
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]

# --- request: messages ------------------------------------------------------------------


class FunctionCall(BaseModel):
    model_config = _REQUEST
    name: str
    arguments: str


class ToolCall(BaseModel):
    model_config = _REQUEST
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(BaseModel):
    model_config = _REQUEST
    role: Literal["system"]
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(BaseModel):
    model_config = _REQUEST
    role: Literal["developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(BaseModel):
    model_config = _REQUEST
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class AssistantMessage(BaseModel):
    model_config = _REQUEST
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    refusal: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None

    @model_validator(mode="after")
    def _has_something(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls and self.function_call is None:
            raise ValueError("an assistant message needs `content` or `tool_calls`")
        return self


class ToolMessage(BaseModel):
    model_config = _REQUEST
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


class FunctionMessage(BaseModel):
    model_config = _REQUEST
    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    SystemMessage
    | DeveloperMessage
    | UserMessage
    | AssistantMessage
    | ToolMessage
    | FunctionMessage,
    Field(discriminator="role"),
]

# --- request: the chat completion ---------------------------------------------------------


class ChatCompletionRequest(BaseModel):
    """``CreateChatCompletionRequest``, plus the engine's sampling extensions.

    The extensions (``top_k``, ``min_p``, ``repeat_penalty``, ``dry_*``...) are the names
    llama.cpp's and vLLM's servers accept; a request may use them to override a model's
    sampling defaults.
    """

    # Unknown fields are kept (not validated) so that pass-through providers forward them.
    model_config = ConfigDict(strict=True, extra="allow")

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1)]
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    user: str | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # engine sampling extensions (llama.cpp / vLLM names)
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    typical_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    repeat_last_n: Annotated[int, Field(ge=-1)] | None = None
    dry_multiplier: Annotated[float, Field(ge=0, le=10)] | None = None
    dry_base: Annotated[float, Field(ge=1, le=10)] | None = None
    dry_allowed_length: Annotated[int, Field(ge=0)] | None = None
    # interference's own: pin a configured provider by name
    provider: Annotated[str, Field(min_length=1)] | None = None

    def known_fields(self) -> dict[str, Any]:
        """The validated fields that are set (unknown extras left out)."""
        return self.model_dump(
            exclude_none=True, by_alias=True, include=set(type(self).model_fields)
        )

    def upstream_fields(self) -> dict[str, Any]:
        """Every field a pass-through upstream should see (ours, like ``provider``, left out)."""
        return self.model_dump(exclude_none=True, by_alias=True, exclude={"provider"})

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None:
            for key in value:
                if not (key.isascii() and key.isdigit() and len(key) <= 10 and int(key) < 2**31):
                    raise ValueError(f"keys must be token ids given as strings; got {key!r}")
        return value

    # The cross-field rules are checked on the later field, which sees the earlier ones
    # validated in ``info.data``: the error then names the field at fault.

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("logprobs") is not True:
            raise ValueError("`top_logprobs` needs `logprobs: true`")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _chooses_a_declared_tool(
        cls, value: ToolChoice | None, info: ValidationInfo
    ) -> ToolChoice | None:
        if value is not None and "tools" in info.data:
            problem = choice_problem(value, info.data["tools"])
            if problem is not None:
                raise ValueError(problem)
        return value

    @property
    def token_limit(self) -> int | None:
        """The completion token bound the client asked for, if any."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


# --- answers ------------------------------------------------------------------------------

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class ToolCallFunctionDelta(WireModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(WireModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallFunctionDelta | None = None


class ResponseToolCall(WireModel):
    _always = ("type",)

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ResponseMessage(WireModel):
    _always = ("role", "content", "refusal")

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ResponseToolCall] | None = None
    reasoning_content: str | None = None  # as in :class:`Delta`


class Choice(WireModel):
    _always = ("finish_reason", "logprobs")

    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(WireModel, AnswerMethods):
    """``CreateChatCompletionResponse``."""

    _always = ("object",)

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class Delta(WireModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    #: a reasoning model's thinking, as llama.cpp, vLLM and DeepSeek send it (not in the spec)
    reasoning_content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(WireModel):
    _always = ("finish_reason",)

    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(WireModel, AnswerMethods):
    """``CreateChatCompletionStreamResponse``."""

    _always = ("object",)

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None

    def has_output(self) -> bool:
        if self.usage is not None:
            return True
        for choice in self.choices:
            delta = choice.delta
            if choice.finish_reason or delta.content or delta.tool_calls or delta.refusal:
                return True
            if delta.reasoning_content:
                return True
        return False
