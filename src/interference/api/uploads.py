"""Reading a ``multipart/form-data`` upload (audio to transcribe, images to edit): bounded in
size while it arrives, files spooled by starlette (in memory up to 1 MiB, then in a temporary
file), and checked for what a client can get wrong: the content type, a missing or empty file,
a format no engine reads. Every refusal is a 4xx in OpenAI's shape."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

from interference.api.errors import from_validation_error
from interference.errors import (
    InvalidRequestError,
    RequestTooLargeError,
    UnsupportedMediaTypeError,
)
from interference.wire.media import Upload

F = TypeVar("F", bound=BaseModel)

#: the audio formats OpenAI's transcription takes, by file extension (and ``oga``/``opus``,
#: which browsers and phones record)
AUDIO_EXTENSIONS = frozenset(
    {"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "oga", "opus", "wav", "webm"}
)
IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "webp"})
#: bounds on a form's parts besides its size (starlette's defaults allow 1000 of each)
_MAX_FILES = 16
_MAX_FIELDS = 64


@dataclass
class Form:
    """A parsed upload: its text fields in order, its files, and what to close at the end."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    files: dict[str, list[UploadFile]] = field(default_factory=dict)
    _data: FormData | None = None

    async def close(self) -> None:
        if self._data is not None:
            with contextlib.suppress(OSError):
                await self._data.close()

    def parse(self, model: type[F]) -> F:
        """The text fields read into ``model`` (a 400 naming the field at fault)."""
        data = dict(self.fields)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise from_validation_error(exc, data) from None


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"The upload exceeds the limit of {limit} bytes (server.max_upload_bytes)."
    )


async def read_form(request: Request, limit: int) -> Form:
    """The request's form, refused when it is not one (415), malformed (400) or its body
    exceeds ``limit`` bytes (413: at once when the declared length says so, else as soon as
    the bytes received pass it)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        shown = content_type or "none"
        raise UnsupportedMediaTypeError(
            f"Unsupported Content-Type `{shown}`: send the file as `multipart/form-data`."
        )
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise _too_large(limit)
        return message

    bounded = Request(request.scope, counted)
    try:
        data = await bounded.form(max_files=_MAX_FILES, max_fields=_MAX_FIELDS)
    except HTTPException as exc:  # starlette's word for a malformed form
        raise InvalidRequestError(f"The form could not be read: {exc.detail}") from None
    form = Form(_data=data)
    for name, value in data.multi_items():
        if isinstance(value, UploadFile):
            form.files.setdefault(name, []).append(value)
        else:
            form.fields.append((name, value))
    return form


def extension_of(upload: UploadFile) -> str:
    return PurePosixPath(upload.filename or "").suffix.lower().lstrip(".")


def take_file(
    form: Form, name: str, kinds: frozenset[str], what: str, *, many: bool = False
) -> list[Upload]:
    """The form's file(s) in field ``name`` (``name[]`` too), checked: present, not empty, and
    of a format named in ``kinds`` (by extension, else by media type)."""
    found = form.files.get(name, []) + form.files.get(f"{name}[]", [])
    if not found:
        if any(field == name for field, _ in form.fields):
            raise InvalidRequestError(
                f"`{name}` must be a file upload, not a text field.", param=name
            )
        raise InvalidRequestError(f"Missing the `{name}` file ({what}).", param=name)
    if len(found) > 1 and not many:
        raise InvalidRequestError(f"Send one `{name}` file, not {len(found)}.", param=name)
    uploads = []
    for upload in found:
        size = upload.size or 0
        if size == 0:
            raise InvalidRequestError(f"The uploaded `{name}` file is empty.", param=name)
        extension = extension_of(upload)
        subtype = (upload.content_type or "").split(";")[0].rpartition("/")[2].lower()
        if extension not in kinds and subtype not in kinds:
            raise InvalidRequestError(
                f"Unsupported file format `{extension or subtype or 'unknown'}` of "
                f"`{upload.filename}`. Supported formats: {', '.join(sorted(kinds))}.",
                param=name,
                code="unsupported_format",
            )
        uploads.append(
            Upload(
                name=name,
                filename=upload.filename or f"{name}.{extension or subtype}",
                content_type=upload.content_type or "application/octet-stream",
                size=size,
                file=upload,
            )
        )
    return uploads
