"""A fake OpenAI-compatible upstream for images, audio and moderations (a real HTTP server on
127.0.0.1, :class:`~tests.support.upstream.FakeUpstream`): it answers in the spec's shapes and
records what it received, an upload as its fields plus each file's size and SHA-256."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
import time
import wave
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.upstream import FakeUpstream

#: what the fake says is spoken in any audio it is sent
TRANSCRIPT = "the quick brown fox"
#: the bytes of every speech answer: an MP3 frame header, then filler, sent in 4 pieces
SPEECH = b"\xff\xfb\x90\x00" + bytes(range(256)) * 64


def tone_wav(seconds: float = 0.4, rate: int = 24000) -> bytes:
    """A WAV file of a 440 Hz tone: audio a browser can play."""
    samples = b"".join(
        int(8000 * math.sin(2 * math.pi * 440 * i / rate)).to_bytes(2, "little", signed=True)
        for i in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(samples)
    return out.getvalue()


TONE = tone_wav()
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def media_upstream(name: str = "media") -> FakeUpstream:
    upstream: FakeUpstream

    def refused() -> Response | None:
        status = upstream.faults.status
        if status is None:
            return None
        error = {"error": {"message": f"{name} says {status}", "type": "x", "code": None}}
        return JSONResponse(error, status_code=status)

    async def record_form(request: Request) -> dict[str, Any]:
        form = await request.form(max_part_size=10 << 20)
        seen: dict[str, Any] = {"path": request.url.path, "files": {}}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                seen["files"][key] = {
                    "filename": value.filename,
                    "content_type": value.content_type,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            else:
                seen[key] = value
        upstream.observed.requests.append(seen)
        upstream.observed.headers.append(dict(request.headers))
        return seen

    async def record_json(request: Request) -> dict[str, Any]:
        body = await request.json()
        upstream.observed.requests.append({"path": request.url.path, **body})
        upstream.observed.headers.append(dict(request.headers))
        return dict(body)

    async def speech(request: Request) -> Response:
        body = await record_json(request)
        if (answer := refused()) is not None:
            return answer
        if body.get("response_format") == "wav":
            return Response(TONE, media_type="audio/wav")

        async def pieces() -> AsyncIterator[bytes]:
            quarter = len(SPEECH) // 4
            for i in range(4):
                yield SPEECH[i * quarter : (i + 1) * quarter if i < 3 else None]
                await asyncio.sleep(upstream.faults.chunk_delay)

        return StreamingResponse(pieces(), media_type="audio/mpeg")

    async def transcribe(request: Request) -> Response:
        seen = await record_form(request)
        if (answer := refused()) is not None:
            return answer
        fmt = seen.get("response_format", "json")
        if seen.get("stream") == "true":
            events = [
                {"type": "transcript.text.delta", "delta": word + " "}
                for word in TRANSCRIPT.split()
            ]
            events.append({"type": "transcript.text.done", "text": TRANSCRIPT})
            body = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
            return Response(body, media_type="text/event-stream")
        if fmt == "text":
            return Response(TRANSCRIPT + "\n", media_type="text/plain")
        if fmt in ("srt", "vtt"):
            comma = "," if fmt == "srt" else "."
            cue = f"00:00:00{comma}000 --> 00:00:01{comma}500"
            text = (
                f"1\n{cue}\n{TRANSCRIPT}\n" if fmt == "srt" else f"WEBVTT\n\n{cue}\n{TRANSCRIPT}\n"
            )
            return Response(text, media_type="text/plain")
        if fmt == "verbose_json":
            return JSONResponse(
                {"task": "transcribe", "language": "english", "duration": 1.5, "text": TRANSCRIPT}
            )
        return JSONResponse({"text": TRANSCRIPT})

    def image_list(n: int, response_format: str) -> dict[str, Any]:
        if response_format == "b64_json":
            data = [{"b64_json": base64.b64encode(PNG_1PX).decode()} for _ in range(n)]
        else:
            data = [{"url": f"https://images.invalid/{name}/{i}.png"} for i in range(n)]
        return {"created": int(time.time()), "data": data}

    async def generate(request: Request) -> Response:
        body = await record_json(request)
        if (answer := refused()) is not None:
            return answer
        return JSONResponse(image_list(body.get("n", 1), body.get("response_format", "url")))

    async def edit(request: Request) -> Response:
        seen = await record_form(request)
        if (answer := refused()) is not None:
            return answer
        return JSONResponse(image_list(int(seen.get("n", 1)), seen.get("response_format", "url")))

    async def moderate(request: Request) -> Response:
        body = await record_json(request)
        if (answer := refused()) is not None:
            return answer
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        categories = [
            *("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit"),
            *("illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions"),
            *("sexual", "sexual/minors", "violence", "violence/graphic"),
        ]
        result = {
            "flagged": False,
            "categories": dict.fromkeys(categories, False),
            "category_scores": dict.fromkeys(categories, 0.001),
            "category_applied_input_types": {c: ["text"] for c in categories},
        }
        return JSONResponse(
            {"id": f"modr-{name}", "model": body["model"], "results": [result] * len(inputs)}
        )

    app = Starlette(
        routes=[
            Route("/v1/audio/speech", speech, methods=["POST"]),
            Route("/v1/audio/transcriptions", transcribe, methods=["POST"]),
            Route("/v1/audio/translations", transcribe, methods=["POST"]),
            Route("/v1/images/generations", generate, methods=["POST"]),
            Route("/v1/images/edits", edit, methods=["POST"]),
            Route("/v1/moderations", moderate, methods=["POST"]),
        ]
    )
    upstream = FakeUpstream(app)
    return upstream
