"""The upload body relayed upstream (upstream/multipart.py): its announced length is its real
length, it parses back into the fields and files it was made of, and it reads again from the
start for another attempt."""

from __future__ import annotations

import asyncio
import hashlib
import io

import pytest
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from interference.upstream.client import read_all
from interference.upstream.multipart import PIECE, MultipartBody
from interference.wire.media import Upload


def upload(name: str, filename: str, data: bytes) -> Upload:
    spooled = UploadFile(io.BytesIO(data), size=len(data), filename=filename)
    return Upload(name, filename, "audio/wav", len(data), spooled)


async def parse(body: MultipartBody) -> dict[str, object]:
    async def stream():  # type: ignore[no-untyped-def]
        async for piece in body.pieces():
            yield piece

    headers = Headers({"content-type": body.content_type})
    form = await MultiPartParser(headers, stream(), max_part_size=1 << 20).parse()
    out: dict[str, object] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            data = await value.read()
            out[key] = (value.filename, hashlib.sha256(data).hexdigest(), len(data))
        else:
            out[key] = value
    return out


def test_the_body_is_its_announced_length_and_parses_back() -> None:
    data = bytes(range(256)) * (PIECE // 128 + 7)  # several pieces, the last one short
    body = MultipartBody(
        [("model", "whisper-x"), ("prompt", 'a "quoted"\nline ünïcode')],
        [upload("file", 'we"ird\r\nname.wav', data)],
    )

    async def check() -> None:
        first = await read_all(body)
        assert len(first) == body.length
        assert await read_all(body) == first  # read again: the same bytes (a retry)
        parsed = await parse(body)
        assert parsed["model"] == "whisper-x"
        assert parsed["prompt"] == 'a "quoted"\nline ünïcode'
        filename, digest, size = parsed["file"]  # type: ignore[misc]
        assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))
        assert "\n" not in filename
        assert '"' not in filename

    asyncio.run(check())


def test_a_file_shorter_than_announced_fails() -> None:
    short = Upload("file", "a.wav", "audio/wav", 100, UploadFile(io.BytesIO(b"x" * 10)))
    with pytest.raises(ValueError, match="shorter"):
        asyncio.run(read_all(MultipartBody([], [short])))
