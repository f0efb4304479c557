"""``POST /v1/embeddings``: the request and the list of embeddings, mirroring the spec."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from interference.wire.common import Prompt, WireModel

_REQUEST = ConfigDict(strict=True, extra="allow")


class EmbeddingRequest(WireModel):
    """``CreateEmbeddingRequest`` (plus ``provider``)."""

    model_config = _REQUEST

    input: Prompt
    model: Annotated[str, Field(min_length=1)]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None
    provider: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Prompt) -> Prompt:
        if value == "" or (isinstance(value, list) and (not value or [] in value)):
            raise ValueError("the input must not be empty (nor any of its token lists)")
        return value

    def upstream_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={"provider"})


class Embedding(WireModel):
    _always = ("object",)

    index: int
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(WireModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingList(WireModel):
    """``CreateEmbeddingResponse``."""

    _always = ("object",)

    object: Literal["list"] = "list"
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage
