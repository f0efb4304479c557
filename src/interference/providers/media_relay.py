"""Images, audio and moderations through an OpenAI-compatible upstream: the request goes as
the client wrote it (a form's fields in their order, its files read from where they were
spooled; a JSON body with its unknown fields), with the deployment's model id; the answer comes
back as the bytes arrive, with the upstream's media type (:class:`BinaryBlock`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import orjson

from interference.providers.http import HTTPProvider
from interference.upstream.client import Content
from interference.upstream.multipart import MultipartBody
from interference.wire.media import BinaryBlock, MediaCall

#: an upload's body carries its own content type (with the form's boundary)
_FORM_HEADERS = {"accept": "*/*"}
_JSON_HEADERS = {"content-type": "application/json", "accept": "*/*"}


def media_body(call: MediaCall, model: str) -> Content:
    """The request's body for the upstream, with ``model`` as its model."""
    if not call.is_form:
        fields = call.request.model_dump(exclude_unset=True, exclude={"provider"})
        return orjson.dumps({**fields, "model": model})
    sent = [(name, value) for name, value in call.fields if name not in ("model", "provider")]
    return MultipartBody([("model", model), *sent], call.files)


async def relay_media(
    provider: HTTPProvider, call: MediaCall, model: str
) -> AsyncGenerator[list[BinaryBlock], None]:
    """The upstream's answer, block by block as it arrives; the first names its media type
    (an empty answer is one empty block)."""
    body = media_body(call, model)
    headers = _FORM_HEADERS if call.is_form else _JSON_HEADERS
    async with provider.open_stream(call.path, body, headers=headers) as response:
        media_type = response.headers.get("content-type", "application/octet-stream")
        first = True
        async for block in response.iter_blocks():
            if block:
                yield [BinaryBlock(block, media_type if first else "")]
                first = False
        if first:
            yield [BinaryBlock(b"", media_type)]
