"""``/v1/images/generations``, ``/v1/images/edits`` and ``/v1/moderations``: the requests,
mirroring the spec. interference answers them through upstreams only (docs/audio-images.md:
no image model fits this machine's package-shipped weights), so they are checked for what a
gateway must know (the model, the counts and formats it routes and answers by) and otherwise
go upstream as the client wrote them, unknown fields included."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from interference.wire.common import WireModel

#: OpenAI's defaults when a request names no model
DEFAULT_IMAGE_MODEL = "dall-e-2"
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"

_JSON = ConfigDict(strict=True, extra="allow")


class ImageRequest(WireModel):
    """``CreateImageRequest`` (plus ``provider``)."""

    model_config = _JSON

    prompt: Annotated[str, Field(min_length=1, max_length=32000)]
    model: Annotated[str, Field(min_length=1)] = DEFAULT_IMAGE_MODEL
    n: Annotated[int, Field(ge=1, le=10)] | None = None
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    stream: bool | None = None
    provider: Annotated[str, Field(min_length=1)] | None = None

    def upstream_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"provider"})


class ImageEditForm(BaseModel):
    """The text fields of ``CreateImageEditRequest`` (a form: lax, like a transcription's);
    the images and the mask are apart (:class:`~interference.wire.media.Upload`)."""

    model_config = ConfigDict(extra="allow")

    prompt: Annotated[str, Field(min_length=1, max_length=32000)]
    model: Annotated[str, Field(min_length=1)] = DEFAULT_IMAGE_MODEL
    n: Annotated[int, Field(ge=1, le=10)] | None = None
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    stream: bool = False
    provider: Annotated[str, Field(min_length=1)] | None = None


class ModerationRequest(WireModel):
    """``CreateModerationRequest`` (plus ``provider``)."""

    model_config = _JSON

    input: str | list[str] | list[dict[str, Any]]
    model: Annotated[str, Field(min_length=1)] = DEFAULT_MODERATION_MODEL
    provider: Annotated[str, Field(min_length=1)] | None = None

    def upstream_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"provider"})
