"""Images, audio and moderations on OpenAI's routes: ``/v1/images/generations`` and
``/v1/images/edits``, ``/v1/audio/speech``, ``/v1/audio/transcriptions`` and
``/v1/audio/translations``, ``/v1/moderations``.

Each request becomes a :class:`~interference.wire.media.MediaCall` that the router sends to a
deployment of the model it names, with the same strategy, retries, fallbacks, timeouts and
accounting as a chat request. The answer goes out as its bytes arrive, with the media type the
deployment gave it (audio while it is spoken, a transcript, an image list): a failure before the
first byte falls back or is a real HTTP status; one after it cuts the connection, since half an
audio file or JSON body cannot be mended.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from interference.api.record import record_of
from interference.api.sse import wait_for_disconnect
from interference.api.state import read_model, resolve_model, state_of
from interference.api.uploads import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, read_form, take_file
from interference.errors import InterferenceError
from interference.logs import RESPONSE_CUT
from interference.wire.audio import SpeechRequest, TranscriptionForm
from interference.wire.images import ImageEditForm, ImageRequest, ModerationRequest
from interference.wire.media import BinaryBlock, MediaCall, MediaEndpoint


class BlockStreamResponse(Response):
    """Bytes sent as they come, cancelled when the client goes away; an error after the head
    leaves the response unfinished (the server closes the connection: the client sees it)."""

    def __init__(
        self,
        blocks: AsyncGenerator[bytes, None],
        media_type: str,
        headers: dict[str, str],
        release: Callable[[], Awaitable[object]],
    ) -> None:
        self.blocks = blocks
        self.release = release
        self.status_code = 200
        self.background = None
        extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.raw_headers = [
            (b"content-type", media_type.encode("latin-1")),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *extra,
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        hung_up = False
        streaming = True

        def hang_up() -> None:
            nonlocal hung_up
            if streaming:
                hung_up = True
                task.cancel()

        watcher = asyncio.create_task(wait_for_disconnect(receive, hang_up))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for block in self.blocks:
                await send({"type": "http.response.body", "body": block, "more_body": True})
            if not RESPONSE_CUT.get():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away while we wrote
        except asyncio.CancelledError:
            if not hung_up or task.uncancel() > 0:
                raise
        finally:
            streaming = False
            watcher.cancel()
            await self.blocks.aclose()
            await self.release()


async def _answer(
    request: Request,
    call: MediaCall,
    *,
    stream: bool = False,
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> Response:
    """Route ``call`` and relay its answer (``cleanup`` runs once it is sent, or failed)."""
    state = state_of(request)
    record = record_of(request.scope)
    record.model, record.stream = call.model, stream
    started = time.perf_counter()
    try:
        await resolve_model(request, call.model, 0)  # 404, 403 or 429 before any work
        streamed = await state.router.stream(call, lambda d: d.provider.media_blocks(call, d.model))
    except BaseException:
        if cleanup is not None:
            await cleanup()
        raise
    record.stream_opened(streamed, started)
    chunks = streamed.chunks
    first = await anext(chunks)  # the router holds it: it is already there
    media_type = next(
        (b.media_type for b in first if isinstance(b, BinaryBlock) and b.media_type),
        "application/octet-stream",
    )

    async def relay() -> AsyncGenerator[bytes, None]:
        record.outcome = "client_closed"  # unless the answer gets to its end
        try:
            for block in first:
                yield block.to_json()
            async for batch in chunks:
                for block in batch:
                    yield block.to_json()
            record.outcome = "ok"
        except InterferenceError as exc:
            record.outcome, record.error, record.error_message = "error", exc.code, exc.message
            RESPONSE_CUT.set(True)
        except Exception:
            record.outcome, record.error = "error", "internal_error"
            record.exception = sys.exc_info()[1]  # logged once, on the request's line
            RESPONSE_CUT.set(True)

    async def release() -> None:
        await chunks.aclose()
        if cleanup is not None:
            await cleanup()

    headers = {
        "x-interference-deployment": streamed.deployment.name,
        "x-interference-attempts": str(streamed.attempts),
    }
    return BlockStreamResponse(relay(), media_type, headers, release)


async def speech(request: Request) -> Response:
    parsed, _ = await read_model(request, SpeechRequest)
    return await _answer(request, MediaCall("speech", parsed), stream=True)


async def images(request: Request) -> Response:
    parsed, _ = await read_model(request, ImageRequest)
    return await _answer(request, MediaCall("images", parsed), stream=bool(parsed.stream))


async def moderations(request: Request) -> Response:
    parsed, _ = await read_model(request, ModerationRequest)
    return await _answer(request, MediaCall("moderations", parsed))


async def _audio(request: Request, endpoint: MediaEndpoint) -> Response:
    form = await read_form(request, state_of(request).config.server.max_upload_bytes)
    try:
        parsed = form.parse(TranscriptionForm)
        files = take_file(form, "file", AUDIO_EXTENSIONS, "the audio to transcribe")
    except BaseException:
        await form.close()
        raise
    call = MediaCall(endpoint, parsed, form.fields, files)
    return await _answer(request, call, stream=parsed.stream, cleanup=form.close)


async def transcriptions(request: Request) -> Response:
    return await _audio(request, "transcriptions")


async def translations(request: Request) -> Response:
    return await _audio(request, "translations")


async def image_edits(request: Request) -> Response:
    form = await read_form(request, state_of(request).config.server.max_upload_bytes)
    try:
        parsed = form.parse(ImageEditForm)
        files = take_file(form, "image", IMAGE_EXTENSIONS, "the image to edit", many=True)
        if form.files.get("mask"):
            files += take_file(form, "mask", frozenset({"png"}), "the mask")
    except BaseException:
        await form.close()
        raise
    call = MediaCall("image_edits", parsed, form.fields, files)
    return await _answer(request, call, stream=parsed.stream, cleanup=form.close)


def media_routes(prefix: str) -> list[BaseRoute]:
    """The routes under ``prefix`` (``/v1``, or none for clients pointed at the bare host)."""
    return [
        Route(f"{prefix}/audio/speech", speech, methods=["POST"]),
        Route(f"{prefix}/audio/transcriptions", transcriptions, methods=["POST"]),
        Route(f"{prefix}/audio/translations", translations, methods=["POST"]),
        Route(f"{prefix}/images/generations", images, methods=["POST"]),
        Route(f"{prefix}/images/edits", image_edits, methods=["POST"]),
        Route(f"{prefix}/moderations", moderations, methods=["POST"]),
    ]
