"""What the image and audio routes hand the router and the providers: a :class:`MediaCall`
(which endpoint, the validated request, and for a form its fields and files as they came), and
the answer as :class:`BinaryBlock` batches (bytes as they arrive: audio, an image list, a
transcript), which the router bounds and fails over like chat chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from interference.wire.audio import SpeechRequest, TranscriptionForm
from interference.wire.images import ImageEditForm, ImageRequest, ModerationRequest

MediaEndpoint = Literal[
    "speech", "transcriptions", "translations", "images", "image_edits", "moderations"
]
#: each endpoint's path under an OpenAI base URL (``/v1``)
MEDIA_PATHS: dict[MediaEndpoint, str] = {
    "speech": "/audio/speech",
    "transcriptions": "/audio/transcriptions",
    "translations": "/audio/translations",
    "images": "/images/generations",
    "image_edits": "/images/edits",
    "moderations": "/moderations",
}
MediaRequest = SpeechRequest | TranscriptionForm | ImageRequest | ImageEditForm | ModerationRequest


class Spooled(Protocol):
    """An uploaded file where the server spooled it (starlette's ``UploadFile``)."""

    async def read(self, size: int = -1) -> bytes: ...

    async def seek(self, offset: int) -> None: ...


@dataclass(frozen=True)
class Upload:
    """A file of a form: its field name, file name, media type, size in bytes and content."""

    name: str
    filename: str
    content_type: str
    size: int
    file: Spooled


@dataclass
class MediaCall:
    """One image, audio or moderation request, as the router routes it."""

    endpoint: MediaEndpoint
    request: MediaRequest
    #: a form's text fields as the client sent them, in order (relayed as they came)
    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[Upload] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def provider(self) -> str | None:
        return self.request.provider

    @property
    def path(self) -> str:
        return MEDIA_PATHS[self.endpoint]

    @property
    def is_form(self) -> bool:
        return isinstance(self.request, TranscriptionForm | ImageEditForm)


@dataclass
class BinaryBlock:
    """Bytes of an answer as they arrived; the first names the answer's media type. It meets
    :class:`~interference.wire.chunks.StreamChunk`: any block is output (after it a failure
    can no longer fall back), and it carries no tokens."""

    content: bytes
    media_type: str = ""

    def has_output(self) -> bool:
        return True

    def has_choices(self) -> bool:
        return True

    def completion_tokens(self) -> int | None:
        return None

    def prompt_tokens(self) -> int | None:
        return None

    def cached_tokens(self) -> int | None:
        return None

    def stamp(self, cid: str, created: int, model: str) -> None:
        """Nothing to stamp: the bytes go out as they came."""

    def drop_usage(self) -> None:
        """No usage to drop."""

    def to_json(self) -> bytes:
        return self.content
