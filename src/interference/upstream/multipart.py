"""A ``multipart/form-data`` request body written as it is read (a
:class:`~interference.upstream.client.BodyStream`): text fields, then files read piece by piece
from where the server spooled them, so that a 25 MB upload relayed upstream is never whole in
memory. Its length is known before the first byte (``content-length``: some upstreams refuse
chunked uploads), and it can be read again from the start for another attempt."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

#: bytes read from a spooled file at a time
PIECE = 256 * 1024


class Readable(Protocol):
    """What is read of a spooled upload (starlette's ``UploadFile`` is one)."""

    async def read(self, size: int = -1) -> bytes: ...

    async def seek(self, offset: int) -> None: ...


class FilePart(Protocol):
    """An uploaded file: its form field, file name, media type, size and content."""

    @property
    def name(self) -> str: ...

    @property
    def filename(self) -> str: ...

    @property
    def content_type(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def file(self) -> Readable: ...


def _quoted(value: str) -> str:
    # the WHATWG form encoding: a quote or a line break cannot end the parameter early
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartBody:
    """``fields`` (name, value) and ``files`` as one ``multipart/form-data`` body."""

    def __init__(self, fields: Sequence[tuple[str, str]], files: Sequence[FilePart]) -> None:
        boundary = f"interference-{os.urandom(12).hex()}"
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self._delimiter = f"--{boundary}\r\n".encode()
        self._fields = b"".join(
            self._delimiter
            + f'content-disposition: form-data; name="{_quoted(name)}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
            for name, value in fields
        )
        self._files = [
            (
                self._delimiter
                + (
                    f'content-disposition: form-data; name="{_quoted(part.name)}"; '
                    f'filename="{_quoted(part.filename)}"\r\n'
                    f"content-type: {part.content_type or 'application/octet-stream'}\r\n\r\n"
                ).encode(),
                part,
            )
            for part in files
        ]
        self._end = f"--{boundary}--\r\n".encode()
        self.length = (
            len(self._fields)
            + sum(len(head) + part.size + 2 for head, part in self._files)
            + len(self._end)
        )

    async def pieces(self) -> AsyncIterator[bytes]:
        yield self._fields
        for head, part in self._files:
            yield head
            await part.file.seek(0)
            left = part.size
            while left > 0:
                piece = await part.file.read(min(PIECE, left))
                if not piece:
                    raise ValueError(f"the upload `{part.filename}` is shorter than announced")
                left -= len(piece)
                yield piece
            yield b"\r\n"
        yield self._end
