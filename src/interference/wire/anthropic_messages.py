"""Anthropic's Messages dialect: ``POST /v1/messages`` and ``/v1/messages/count_tokens``
(https://docs.claude.com/en/api/messages), as the gateway reads the requests.

Clients of this dialect (Claude Code first) send more than any schema lists: beta fields
(``context_management``, ``output_config``), ``cache_control`` on every block, server tools
(``web_search_...``), block types of later API versions, a ``role: "system"`` message in the
middle of a conversation. So the request is read tolerantly: unknown fields are ignored, and a
content block is checked only when its type is one the gateway translates (text, image,
tool_use, tool_result, thinking); other blocks are left for the translation to drop. What it
does check are the shapes it relies on, each refusal a 400 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_TOLERANT = ConfigDict(strict=True, extra="ignore")


class TextBlock(BaseModel):
    model_config = _TOLERANT
    type: Literal["text"]
    text: str


class Base64Source(BaseModel):
    model_config = _TOLERANT
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(BaseModel):
    model_config = _TOLERANT
    type: Literal["url"]
    url: str


class ImageBlock(BaseModel):
    model_config = _TOLERANT
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]


class ToolUseBlock(BaseModel):
    model_config = _TOLERANT
    type: Literal["tool_use"]
    id: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    input: dict[str, Any]


class ToolResultBlock(BaseModel):
    model_config = _TOLERANT
    type: Literal["tool_result"]
    tool_use_id: Annotated[str, Field(min_length=1)]
    content: str | list[dict[str, Any]] = ""
    is_error: bool | None = None


class ThinkingBlock(BaseModel):
    model_config = _TOLERANT
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


#: the block types the gateway translates, by ``type``
KNOWN_BLOCKS: dict[str, type[BaseModel]] = {
    "text": TextBlock,
    "image": ImageBlock,
    "tool_use": ToolUseBlock,
    "tool_result": ToolResultBlock,
    "thinking": ThinkingBlock,
}


def _blocks(value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Check the blocks of a type the gateway translates; leave the others as they are."""
    if isinstance(value, list):
        for i, block in enumerate(value):
            model = KNOWN_BLOCKS.get(str(block.get("type")))
            if model is not None:
                try:
                    model.model_validate(block)
                except ValueError as exc:
                    raise ValueError(f"content block {i} ({block['type']}): {exc}") from None
    return value


class InputMessage(BaseModel):
    model_config = _TOLERANT
    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]]

    @field_validator("content")
    @classmethod
    def _check_blocks(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        return _blocks(value)


class ToolChoice(BaseModel):
    model_config = _TOLERANT
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class CountTokensRequest(BaseModel):
    """``POST /v1/messages/count_tokens``: the request a message would be, without its
    ``max_tokens``."""

    model_config = _TOLERANT
    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[InputMessage], Field(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None

    @field_validator("system")
    @classmethod
    def _check_system(
        cls, value: str | list[dict[str, Any]] | None
    ) -> str | list[dict[str, Any]] | None:
        return value if value is None else _blocks(value)


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``."""

    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    metadata: dict[str, Any] | None = None


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]


class ModelInfo(BaseModel):
    """One model of Anthropic's ``GET /v1/models``."""

    type: Literal["model"] = "model"
    id: str
    display_name: str
    created_at: str  # RFC 3339


class ModelInfoList(BaseModel):
    """Anthropic's ``GET /v1/models`` (one page: the gateway lists every name at once)."""

    data: list[ModelInfo]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None
