"""The legacy text completions dialect: ``POST /v1/completions``, its request and answer (the
same shape streamed), mirroring the spec."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from interference.wire.common import AnswerMethods, Prompt, StreamOptions, Usage, WireModel

_REQUEST = ConfigDict(strict=True, extra="allow")


class CompletionRequest(WireModel):
    """``CreateCompletionRequest`` (plus ``provider``, to pin a configured provider)."""

    model_config = _REQUEST

    model: Annotated[str, Field(min_length=1)]
    prompt: Prompt
    best_of: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    user: str | None = None
    provider: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: Prompt) -> Prompt:
        if isinstance(value, list) and (not value or [] in value):
            raise ValueError("the prompt must not be empty (nor any of its token lists)")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def upstream_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={"provider"})


class CompletionChoice(WireModel):
    _always = ("finish_reason", "logprobs")

    index: int
    text: str
    finish_reason: Literal["stop", "length", "content_filter"] | None = None
    logprobs: dict[str, Any] | None = None


class Completion(WireModel, AnswerMethods):
    """``CreateCompletionResponse``; streamed chunks have the same shape."""

    _always = ("object",)

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None

    def has_output(self) -> bool:
        if self.usage is not None:
            return True
        return any(choice.finish_reason or choice.text for choice in self.choices)
